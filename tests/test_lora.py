"""LoRA adapters (issue 38): `convert --lora` and `--merge-lora`, `run`/`bench`/`eval --lora`, proven by logits.

The model, the adapter and both conversions are made once for the module (``archmatrix_lora.build``: a tiny
random Llama with a real tokenizer and a random PEFT LoRA whose lora_B is non-zero).  The reference is PEFT's own
merged model in fp32; the adapter applied at load time and the model merged by `--merge-lora` both match it
within F16 rounding, and the bare base does not, so a dropped adapter fails.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from archmatrix import passes
from archmatrix_lora import LoraCase, build, kld_max, make_adapter, make_base, row_of, scored
from conftest import run_main
from hubserver import Repo

from edgeq.errors import EXIT_USAGE, EXIT_USER, AdapterMismatch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory, embedded_checkpoint: Path) -> LoraCase:
    work = tmp_path_factory.mktemp("lora")
    with pytest.MonkeyPatch.context() as mp:  # module-scoped: the per-test isolation is not active yet
        mp.setenv("EDGEQ_MODELS_DIR", str(work / "models"))
        mp.setenv("HF_HOME", str(work / "hf-home"))
        return build(work, embedded_checkpoint)


def test_adapter_at_load_and_merged_both_match_peft_merged(case: LoraCase) -> None:
    """The architecture table's adapter row: every column, the commands included (as benchmarks/ writes it)."""
    row = row_of(case)
    assert passes(row), row
    assert row["adapter_effect"] > 20 * row["kld_max"]  # the adapter moves the model far past F16's error
    bench = json.loads((case.work / "bench.json").read_text())["runs"]  # the row's `bench --lora`
    assert bench and all(r["status"] == "ok" and r["lora"] == str(case.lora) for r in bench)


def test_without_the_adapter_the_logits_are_the_bare_base(case: LoraCase) -> None:
    (bare,) = scored(case.f16, case.ids)
    assert kld_max(case.base_ref, bare) < 0.01 < kld_max(case.merged_ref, bare)


def test_files_are_recorded_and_the_merge_is_quantizable(case: LoraCase) -> None:
    from edgeq.manifest import load, verify
    from edgeq.sources.gguf import read
    from edgeq.sources.gguf_header import read_header

    h = read_header(case.lora)
    assert h.metadata["general.type"] == "adapter" and h.metadata["adapter.type"] == "lora"
    assert h.metadata["adapter.lora.alpha"] == 8.0
    mf = load(case.lora.parent)
    assert mf is not None and case.lora.name in mf.files and verify(case.lora.parent).passed
    assert mf.options["adapter"]["base"]["path"] == str(case.base)  # type: ignore[index]
    merged = load(case.merged["F16"].parent)
    assert merged is not None and merged.options["merge_lora"]["scale"] == 1.0  # type: ignore[index]
    assert {p.name for p in case.merged.values()} <= set(merged.files)
    assert {q: read(p).file_type for q, p in case.merged.items()} == {"F16": "F16", "Q8_0": "Q8_0", "Q4_K_M": "Q4_K_M"}
    # The base folder's models are the base's; the adapter sits in a subfolder of its own.
    assert sorted(p.name for p in case.f16.parent.glob("*.gguf")) == [case.f16.name]


def test_run_with_the_adapter_and_the_merged_model_give_the_same_greedy_tokens(case: LoraCase, capsys) -> None:
    # A random model's greedy path passes near-ties (top-2 logits 0.001 apart), where F16 rounding alone may pick
    # either token: the merged weights are rounded once, the base and the adapter each on their own.  After "Hello"
    # the merged model's 8 steps are decided by at least 0.19 here, ten times the smallest gap seen to flip (0.016).
    args = ["-n", "8", "--ctx", "128", "--json", "Hello"]
    outs = {}
    for key, model in (("adapted", [str(case.f16), "--lora", str(case.lora)]), ("merged", [str(case.merged["F16"])]),
                       ("bare", [str(case.f16)])):
        code, err, out = run_main(["run", *model, *args], capsys)
        assert code == 0, err
        outs[key] = json.loads(out)
    assert outs["adapted"]["lora"] == str(case.lora) and outs["merged"]["lora"] is None
    assert outs["adapted"]["generated_tokens"] == outs["merged"]["generated_tokens"] >= 8
    assert outs["adapted"]["text"] == outs["merged"]["text"] != outs["bare"]["text"]  # a dropped adapter fails


def test_eval_with_the_adapter_scores_as_the_merged_model(case: LoraCase, capsys) -> None:
    text = case.work / "eval-same.txt"
    text.write_text("It was the best of times, it was the worst of times. " * 16, encoding="utf-8")
    common = ["--text", str(text), "--ctx", "32", "--max-tokens", "64", "--json"]
    code, err, out = run_main(["eval", "ppl", str(case.f16), "--lora", str(case.lora), *common,
                               "-o", str(case.work / "e1.json")], capsys)
    assert code == 0, err
    adapted = json.loads(out)["rows"][0]
    code, err, out = run_main(["eval", "ppl", str(case.merged["F16"]), *common, "-o", str(case.work / "e2.json")],
                              capsys)
    assert code == 0, err
    merged = json.loads(out)["rows"][0]
    assert adapted["model"]["lora"] == str(case.lora)
    assert adapted["ppl"] == pytest.approx(merged["ppl"], rel=0.01)


def test_an_adapter_for_another_shape_is_refused_before_any_work(case: LoraCase, tmp_path, capsys) -> None:
    make_base(tmp_path / "wider", case.base, hidden_size=128)
    capsys.readouterr()  # transformers' progress bars while saving
    for flag in ("--lora", "--merge-lora"):
        out = tmp_path / flag.strip("-")
        code, err, _ = run_main(["convert", str(tmp_path / "wider"), "--q8", flag, str(case.adapter), "-o", str(out)],
                                capsys)
        assert code == EXIT_USER and len(err.splitlines()) == 1, err
        assert "does not fit wider" in err and "is 128x128 in the base" in err
        assert not out.exists()


def test_an_adapter_for_another_architecture_is_refused(case: LoraCase, tmp_path) -> None:
    import transformers

    from edgeq.conversion import convert

    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64))
    make_adapter(gpt2, tmp_path / "gpt2-adapter", targets=["c_attn"])
    with pytest.raises(AdapterMismatch, match="another architecture.*none of its 1 tensors"):
        convert(str(case.base), quants=["Q8_0"], outdir=tmp_path / "o", progress=False,
                lora=str(tmp_path / "gpt2-adapter"))
    assert not (tmp_path / "o").exists()


def test_run_refuses_what_is_not_an_adapter_that_fits(case: LoraCase, embedded_outputs, capsys) -> None:
    smol = next(p for p in embedded_outputs if p.name.endswith("-Q8_0.gguf"))
    code, err, _ = run_main(["run", str(smol), "--lora", str(case.lora), "Hi"], capsys)
    assert code == EXIT_USER and len(err.splitlines()) == 1 and "does not fit" in err, err
    code, err, _ = run_main(["run", str(case.lora), "Hi"], capsys)  # the adapter alone is no model
    assert code == EXIT_USER and "is a LoRA adapter, not a model" in err
    code, err, _ = run_main(["run", str(case.f16), "--lora", str(case.adapter), "Hi"], capsys)
    assert code == EXIT_USER and "PEFT adapter folder" in err and "edgeq convert BASE --lora" in err
    code, err, _ = run_main(["run", str(case.f16), "--lora", str(case.f16), "Hi"], capsys)
    assert code == EXIT_USER and "a model, not an adapter" in err
    code, err, _ = run_main(["run", str(case.f16), "--lora-scale", "0.5", "Hi"], capsys)  # a scale of nothing
    assert code == EXIT_USAGE and "--lora-scale 0.5 scales a --lora adapter, and none was given" in err
    code, err, _ = run_main(["convert", str(case.base), "--lora", str(case.adapter), "--lora-scale", "2"], capsys)
    assert code == EXIT_USAGE and "scales a --merge-lora adapter" in err


def test_peft_features_llama_cpp_cannot_apply_are_refused(case: LoraCase, tmp_path) -> None:
    from edgeq.errors import SourceError
    from edgeq.sources.adapter import read_peft

    for key, value, said in (("use_dora", True, "DoRA"), ("use_rslora", True, "rsLoRA"),
                             ("peft_type", "IA3", "IA3 adapter")):
        folder = shutil.copytree(case.adapter, tmp_path / key)
        cfg = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**cfg, key: value}))
        with pytest.raises(SourceError, match=said):
            read_peft(folder)


def test_convert_lora_by_repo_id_from_the_hub(case: LoraCase, fake_hub, monkeypatch, tmp_path) -> None:
    from edgeq.conversion import convert
    from edgeq.manifest import load

    fake_hub.repos["edgeq-test/hub-adapter"] = Repo({p.name: p.read_bytes() for p in case.adapter.iterdir()})
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    # Into the module's base folder: its F16 is reused, so only the adapter is converted.
    res = convert(str(case.base), quants=["F16"], outdir=case.f16.parent, progress=False, lora="edgeq-test/hub-adapter")
    assert res.outputs[0].reused and res.adapter is not None and not res.adapter.reused
    assert Path(res.adapter.path) == case.f16.parent / "lora-hub-adapter" / "hub-adapter-F16.gguf"
    mf = load(Path(res.adapter.path).parent)
    assert mf is not None and mf.source["repo_id"] == "edgeq-test/hub-adapter"
    assert mf.source["revision"] == fake_hub.repos["edgeq-test/hub-adapter"].commit
