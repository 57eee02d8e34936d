"""The CLI is a thin layer: check what it passes to the library and how it renders."""
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import edgeq.cli.models as cli_models  # the commands hold what they call
import edgeq.sources.hub as download_mod
from edgeq.cli import cli, main
from edgeq.conversion import ConvertResult, OutputFile


@pytest.fixture
def calls(monkeypatch):
    seen = {}

    def fake_convert(source, **kwargs):
        seen.update(kwargs, source=source)
        out = OutputFile(type="Q8_0", variant="Q8_0", path="models/x/x-Q8_0.gguf", size_bytes=1000, bits_per_weight=8.5,
                         seconds=1.0, reused=False, tensor_types={"Q8_0": 1.0})
        return ConvertResult({"kind": "local"}, "models/x", "models/x/edgeq-manifest.json", "llama.cpp t", [out],
                             ["a note"])

    monkeypatch.setattr(cli_models, "run_convert", fake_convert)
    return seen


def invoke(args, **kw):
    return CliRunner().invoke(cli, args, catch_exceptions=False, **kw)


def test_convert_flags_become_quant_types(calls):
    invoke(["convert", "org/model", "--q8", "--q4", "--quant", "Q6_K,Q5_K_M", "--quant", "IQ4_NL"])
    assert calls["source"] == "org/model"
    assert calls["quants"] == ["Q8_0", "Q4_K_M", "Q6_K,Q5_K_M", "IQ4_NL"]


def test_convert_defaults(calls):
    invoke(["convert"])
    assert calls["source"] is None  # the embedded model
    assert calls["quants"] == ["Q8_0"] and calls["outtype"] == "f16"
    assert calls["keep_f16"] is True and calls["force"] is False and calls["allow_pickle"] is False


def test_convert_passes_options_and_token_from_env(calls):
    invoke(["convert", "org/m", "--outtype", "bf16", "-o", "out", "--name", "N", "--force", "--no-keep-f16",
            "--threads", "3", "--revision", "v1", "--allow-pickle"], env={"HF_TOKEN": "hf_x"})
    assert (calls["outtype"], calls["outdir"], calls["name"], calls["threads"]) == ("bf16", "out", "N", 3)
    assert calls["force"] and not calls["keep_f16"] and calls["allow_pickle"]
    assert (calls["revision"], calls["token"]) == ("v1", "hf_x")


def test_convert_json_is_the_result_and_nothing_else(calls):
    res = invoke(["convert", "org/m", "--json"])
    data = json.loads(res.stdout)
    assert data["outputs"][0]["type"] == "Q8_0" and data["notes"] == ["a note"]
    assert calls["progress"] is False


def test_convert_table_and_notes(calls):
    res = invoke(["convert", "org/m"])
    assert "x-Q8_0.gguf" in res.stdout and "8.50" in res.stdout
    assert "note: a note" in res.stderr


def test_download_passes_options(monkeypatch):
    seen = {}
    monkeypatch.setattr(cli_models, "run_download",
                        lambda repo, **kw: seen.update(kw, repo=repo) or download_mod.DownloadResult("/p", repo, "abc"))
    res = invoke(["download", "org/m", "--revision", "r", "--token", "t", "--local-dir", "d"])
    assert res.stdout.strip() == "/p"
    assert (seen["repo"], seen["revision"], seen["token"], seen["local_dir"]) == ("org/m", "r", "t", "d")


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["convert", "--no-such-flag"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2


def test_keyboard_interrupt_exits_130(monkeypatch, capsys):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_models, "run_convert", boom)
    with pytest.raises(SystemExit) as e:
        main(["convert", "org/m"])
    assert e.value.code == 130 and "interrupted" in capsys.readouterr().err


def test_help_does_not_import_torch():
    code = "import sys; from edgeq.cli import cli; assert 'torch' not in sys.modules and 'llama_cpp' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_edgeq_threads_sets_the_default_and_a_bad_value_is_one_line(monkeypatch):
    from edgeq.errors import UsageError
    from edgeq.system import default_threads

    monkeypatch.setenv("EDGEQ_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.delenv("EDGEQ_THREADS")
    assert default_threads() >= 1
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("EDGEQ_THREADS", bad)
        with pytest.raises(UsageError) as e:
            default_threads()
        assert e.value.exit_code == 2 and len(str(e.value).splitlines()) == 1 and "EDGEQ_THREADS" in str(e.value)
