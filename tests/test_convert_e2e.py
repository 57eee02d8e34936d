"""End to end with the real vendored converter, llama-quantize and libllama (marked slow; CI runs them)."""
import json
import os
import pickle
from pathlib import Path

import pytest
from conftest import final_ggufs, make_tiny_checkpoint
from hubserver import Repo

from edgeq.cli import main
from edgeq.conversion import convert
from edgeq.errors import ToolFailed
from edgeq.generation import generate
from edgeq.manifest import load as load_manifest
from edgeq.manifest import verify
from edgeq.sources.gguf_header import read_header

pytestmark = pytest.mark.slow


def weight_types(path: Path) -> dict[str, str]:
    """Type of each 2-D weight in the transformer blocks.

    Read with edgeq's header reader, which tests/test_inspect.py holds to gguf-py's GGUFReader exactly: the
    latter parses every token of the vocabulary into its own object, 13 s for a 150k-token file here.
    """
    return {t.name: t.type for t in read_header(path).tensors if t.name.startswith("blk.") and len(t.shape) == 2}


@pytest.fixture(scope="module")
def tiny_result(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return convert(str(tiny_llama), quants=["Q8_0", "Q4_K_M"], outdir=out, progress=False)


def test_tiny_llama_types_are_real(tiny_result):
    by_type = {o.type: Path(o.path) for o in tiny_result.outputs}
    assert sorted(by_type) == ["F16", "Q4_K_M", "Q8_0"]
    assert set(weight_types(by_type["F16"]).values()) == {"F16"}
    assert set(weight_types(by_type["Q8_0"]).values()) == {"Q8_0"}
    q4 = weight_types(by_type["Q4_K_M"])
    assert q4["blk.0.attn_q.weight"] == "Q4_K" and q4["blk.0.ffn_gate.weight"] == "Q4_K"
    assert set(q4.values()) <= {"Q4_K", "Q6_K"}  # the _M mix: some tensors get Q6_K
    assert tiny_result.notes == []
    for o in tiny_result.outputs:
        assert Path(o.path).name == f"tiny-llama-{o.type}.gguf"


def test_tiny_llama_files_load_and_generate(tiny_result):
    for o in tiny_result.outputs:
        g = generate(o.path, "Hello", n_predict=4, n_ctx=64)  # a one-token prompt: counted apart from the 4
        assert g.generated_tokens == 4 if g.finish_reason == "length" else 0 < g.generated_tokens < 4, o.type


def test_manifest_records_everything(tiny_result, tiny_llama):
    m = load_manifest(Path(tiny_result.outdir))
    assert m.source["kind"] == "local" and m.source["path"] == str(tiny_llama.resolve())
    assert "0c1e57098bba" in m.llama_cpp
    assert sorted(m.files) == sorted(Path(o.path).name for o in tiny_result.outputs)
    assert all(len(r.sha256) == 64 and r.size_bytes > 0 for r in m.files.values())
    assert verify(tiny_result.outdir).passed


def test_rerun_reuses_and_force_redoes(tiny_result, tiny_llama, capsys):
    again = convert(str(tiny_llama), quants=["Q8_0", "Q4_K_M"], outdir=tiny_result.outdir, progress=False)
    assert all(o.reused for o in again.outputs)
    # Forced from the command line, -v: each remade file says where its seconds went (a reused one has no stages,
    # and its table row says "reused"); the folder verifies after the files were replaced.
    main(["convert", str(tiny_llama), "--q8", "-o", tiny_result.outdir, "--force", "-q", "-v"])
    out, err = capsys.readouterr()
    assert "reused" not in out and "F16: convert_hf_to_gguf" in err
    assert "Q8_0: llama-quantize" in err and "sha256_background" in err
    assert verify(Path(tiny_result.outdir)).passed


def test_rows_not_multiple_of_256_fall_back_and_are_reported(embedded_checkpoint, tmp_path):
    src = make_tiny_checkpoint(tmp_path / "tiny320", embedded_checkpoint, hidden=320, heads=5, kv_heads=5, ffn=640)
    res = convert(str(src), quants=["Q4_K_M"], outdir=tmp_path / "out", keep_f16=False, progress=False)
    (q4,) = res.outputs
    assert q4.fallback.get("Q5_0", 0) > 0.3
    assert set(weight_types(Path(q4.path)).values()) & {"Q5_0"}
    assert any("Q4_K_M" in n and "not a multiple of 256" in n for n in res.notes)
    assert q4.bits_per_weight > 5.0
    assert not (tmp_path / "out" / "tiny320-F16.gguf").exists()  # --no-keep-f16


def test_another_architecture_qwen2(qwen2_tokenizer, tmp_path, capsys):
    src = make_tiny_checkpoint(tmp_path / "tiny-qwen2", qwen2_tokenizer, arch="qwen2")
    main(["convert", str(src), "--q8", "--q4", "-o", str(tmp_path / "out"), "--json"])
    res = json.loads(capsys.readouterr().out)
    by_type = {o["type"]: Path(o["path"]) for o in res["outputs"]}
    assert read_header(by_type["Q8_0"]).metadata["general.architecture"] == "qwen2"
    assert set(weight_types(by_type["Q8_0"]).values()) == {"Q8_0"}
    assert weight_types(by_type["Q4_K_M"])["blk.0.attn_q.weight"] == "Q4_K"
    for p in by_type.values():
        assert generate(p, "Hi", n_predict=2, n_ctx=64).generated_tokens > 0


def test_convert_by_repo_id_from_the_hub(tiny_llama, fake_hub, monkeypatch, tmp_path):
    files = {p.name: p.read_bytes() for p in tiny_llama.iterdir() if p.is_file()}
    fake_hub.repos["edgeq-test/tiny-llama"] = Repo(files)
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    res = convert("edgeq-test/tiny-llama", quants=["Q8_0"], outdir=tmp_path / "out", progress=False)
    m = load_manifest(tmp_path / "out")
    assert m.source["repo_id"] == "edgeq-test/tiny-llama"
    assert m.source["revision"] == fake_hub.repos["edgeq-test/tiny-llama"].commit
    assert [Path(o.path).name for o in res.outputs] == ["tiny-llama-F16.gguf", "tiny-llama-Q8_0.gguf"]


@pytest.mark.parametrize("quant", ["Q8_0", "Q4_K_M"])
def test_embedded_model_knows_paris(embedded_outputs, quant):
    """The real model, converted (the run's one conversion of it, which every test shares), still knows a fact."""
    path = next(p for p in embedded_outputs if p.name.endswith(f"-{quant}.gguf"))
    assert "Paris" in generate(str(path), "The capital of France is", n_predict=8, n_ctx=64).text


def test_failed_quantize_leaves_no_final_file_and_keeps_finished_work(tiny_llama, tmp_path, monkeypatch):
    """llama-quantize dies half-way: its output never appears under the final name."""
    from edgeq import config

    fake_bin = tmp_path / "build" / "bin"
    fake_bin.mkdir(parents=True)
    for f in config.bin_dir().iterdir():
        (fake_bin / f.name).symlink_to(f)
    (fake_bin / "llama-quantize").unlink()
    (fake_bin / "llama-quantize").write_text('#!/bin/sh\necho "[   1/  20] half" ; printf junk > "$2"; '
                                             'echo "llama_model_quantize: failed to quantize: disk on fire" ; exit 1\n')
    os.chmod(fake_bin / "llama-quantize", 0o755)
    monkeypatch.setenv("EDGEQ_BUILD_DIR", str(tmp_path / "build"))
    out = tmp_path / "out"
    with pytest.raises(ToolFailed, match="llama-quantize failed \\(exit 1\\): .*disk on fire"):
        convert(str(tiny_llama), quants=["Q8_0"], outdir=out, progress=False)
    assert [p.name for p in out.iterdir()] == ["edgeq-manifest.json", "tiny-llama-F16.gguf"]
    assert list(load_manifest(out).files) == ["tiny-llama-F16.gguf"]


def test_allow_pickle_still_never_runs_code(embedded_checkpoint, tmp_path, capsys):
    from test_convert_errors import Marker

    src = make_tiny_checkpoint(tmp_path / "pk", embedded_checkpoint)
    (src / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    (src / "pytorch_model.bin").write_bytes(pickle.dumps(Marker(str(marker))))
    with pytest.raises(SystemExit) as e:
        main(["convert", str(src), "--q8", "--allow-pickle", "-o", str(tmp_path / "out")])
    assert e.value.code != 0 and not marker.exists()
    assert final_ggufs(tmp_path / "out") == []


def test_convert_says_where_the_seconds_went(tiny_llama, tmp_path, capsys):
    main(["convert", str(tiny_llama), "--q8", "-o", str(tmp_path / "out"), "--json"])
    outs = {o["type"]: o for o in json.loads(capsys.readouterr().out)["outputs"]}
    # The float file is hashed while the converter writes it; the quant after it is made.
    assert set(outs["F16"]["stages"]) == {"convert_hf_to_gguf", "read_header", "sha256_while_written"}
    assert set(outs["Q8_0"]["stages"]) == {"llama-quantize", "read_header", "sha256_background"}
    for o in outs.values():  # the tool's share of the output's seconds is most of it
        tool = next(v for k, v in o["stages"].items() if not k.startswith(("read_header", "sha256")))
        assert 0 < tool <= o["seconds"] and o["stages"]["read_header"] < 1.0
    # -v's lines for a forced run, and the folder verifying after it: test_rerun_reuses_and_force_redoes.
