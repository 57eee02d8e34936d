"""`edgeq tune`: the allocator's contract, the calibration fit, and the whole tune on the embedded model."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeq.errors import UsageError
from edgeq.tuning.allocate import allocate, allowed_types, padded, smallest
from edgeq.tuning.sensitivity import Calibration, TensorCost, fit, parse_types

TYPES = ("Q8_0", "Q6_K", "Q5_0", "Q4_K", "Q4_0", "Q3_K", "Q2_K")
CAL = Calibration({"embeddings": 1.0, "attn_in": 2.0, "attn_out": 1.5, "ffn_in": 0.5, "ffn_out": 0.7}, [])


def _costs(draw_errors: list[list[float]]) -> list[TensorCost]:
    out = []
    for i, errs in enumerate(draw_errors):
        group = ("attn_in", "ffn_in", "embeddings", "attn_out", "ffn_out")[i % 5]
        out.append(TensorCost(f"blk.{i}.w.weight", group, [256, 16 + 16 * (i % 4)], dict(zip(TYPES, sorted(errs)))))
    return out


def test_a_fallback_outside_the_asked_types_is_kept_only_where_nothing_asked_fits():
    # Q5_K's blocks of 256 do not fit rows of 576: llama-quantize writes Q5_1 there, which was not asked for.
    got = {"Q5_K": {"narrow.weight": "Q5_1", "wide.weight": "Q5_K"}, "Q8_0": {"narrow.weight": "Q8_0", "wide.weight": "Q8_0"}}
    assert allowed_types(got, {"Q5_K", "Q8_0"}) == {"narrow.weight": {"Q8_0"}, "wide.weight": {"Q5_K", "Q8_0"}}
    only = {"Q5_K": got["Q5_K"]}
    assert allowed_types(only, {"Q5_K"}) == {"narrow.weight": {"Q5_1"}, "wide.weight": {"Q5_K"}}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.floats(1e-6, 10.0), min_size=len(TYPES), max_size=len(TYPES)), min_size=1, max_size=12),
       st.floats(0.0, 1.0))
def test_the_allocation_never_exceeds_its_budget_and_spends_it_well(errors, share):
    costs = _costs(errors)
    lo = smallest(costs, CAL, set(TYPES), 32)
    hi = sum(padded(c.shape, "Q8_0", 32) for c in costs)
    budget = int(lo + share * (hi - lo))
    a = allocate(costs, CAL, budget, allowed=set(TYPES), alignment=32)
    assert a.tensor_bytes <= budget
    assert a.tensor_bytes == sum(padded(c.shape, a.types[c.name], 32) for c in costs)
    # No single upgrade that still fits the budget lowers the predicted KLD (the greedy fill spent what it could).
    for c in costs:
        cur = a.types[c.name]
        for t, e in c.errors.items():
            extra = padded(c.shape, t, 32) - padded(c.shape, cur, 32)
            if 0 < extra <= budget - a.tensor_bytes:
                assert CAL.coefficients[c.group] * e >= CAL.coefficients[c.group] * c.errors[cur]
    if share == 1.0:  # everything fits: the least error each tensor can have (ties go to the fewer bytes)
        assert a.predicted_kld == pytest.approx(sum(CAL.coefficients[c.group] * min(c.errors.values()) for c in costs))


def test_more_bytes_must_buy_less_error():
    # Errors that tie: no wider type is worth its bytes, whatever the budget (the failing case CI's hypothesis found).
    costs = _costs([[1.0] * len(TYPES)])
    hi = padded(costs[0].shape, "Q8_0", 32)
    assert allocate(costs, CAL, hi, allowed=set(TYPES), alignment=32).types == {costs[0].name: "Q2_K"}
    costs = _costs([[float(i + 1) for i in range(len(TYPES))]])
    assert allocate(costs, CAL, hi, allowed=set(TYPES), alignment=32).types == {costs[0].name: "Q8_0"}


def test_fit_recovers_known_coefficients_and_refuses_no_signal():
    true = {"embeddings": 0.5, "attn_in": 3.0, "attn_out": 0.2, "ffn_in": 1.0, "ffn_out": 2.0, "floor": 0.003}
    groups = ("embeddings", "attn_in", "attn_out", "ffn_in", "ffn_out")
    probes = {f"p{i}": {g: ((i + 1) * (j + 2)) % 7 + 0.5 * (i == j) for j, g in enumerate(groups)} for i in range(8)}
    measured = {p: true["floor"] + sum(true[g] * probes[p][g] for g in groups) for p in probes}
    cal = fit(probes, measured)
    for g, v in true.items():
        assert cal.coefficients[g] == pytest.approx(v, rel=1e-6)
    assert all(p["predicted_kld"] == pytest.approx(p["measured_kld"], rel=1e-6) for p in cal.probes)
    with pytest.raises(UsageError, match="no probe gave a positive KLD"):
        fit(probes, dict.fromkeys(probes, 0.0))


def test_types_are_checked():
    assert parse_types(["q4_k", "Q8_0", "Q4_K"]) == ["Q4_K", "Q8_0"]
    with pytest.raises(UsageError, match="recipe .* not a tensor type"):  # a mix is not a type (issue 32)
        parse_types(["q4_k_m", "Q8_0"])
    with pytest.raises(UsageError, match="not a type tune can choose"):
        parse_types(["Q9_9"])


# --- the whole tune (slow) ----------------------------------------------------------------------------------------

# Few types, a short imatrix and evaluation, on a tiny Llama: the whole tune in a minute.  These tests check tune's
# mechanics (the file, its recipe, the verification, reuse, refusals), which a tiny model exercises as a real one
# does; whether the allocation beats llama.cpp's stock recipes is a question about real models, measured by
# benchmarks/tune.py (results in benchmarks/results/tune.md).  Its logits are peaked (initializer_range 0.1) so
# that quantization moves the KLD well above rounding and the probes' fit has a signal.  --min-speed 0: the
# allocation by KLD alone; the speed floor follows timings that a shared 2-core machine cannot make steady, so its
# effect is test_decisions.py's and benchmarks/tune.py's to measure.  --threads 1: beside the other xdist worker on
# two cores, two llama.cpp threads spinning at their barriers on a shared core run 10-80x slower than one.
FAST = ["--types", "Q8_0,Q6_K,Q5_0,Q4_K,Q4_0,Q3_K,IQ4_NL", "--imatrix-chunks", "2", "--eval-tokens", "1024",
        "--min-speed", "0", "--threads", "1"]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, embedded_checkpoint):
    """A tune of the tiny Llama just under the size of its stock Q4_K_M, into the folder its plain conversion made
    (as a user's convert folder is): its F16 is reused."""
    from conftest import make_tiny_checkpoint

    from edgeq.cli import main
    from edgeq.conversion import convert

    out = tmp_path_factory.mktemp("tune")
    ck = make_tiny_checkpoint(out / "tiny", embedded_checkpoint, layers=4, ffn=768, initializer_range=0.1)
    res = convert(str(ck), quants=["Q4_K_M"], outdir=out / "m", progress=False)
    stock = next(o for o in res.outputs if o.variant == "Q4_K_M")
    first = out / "first.json"
    with open(first, "w") as f:
        _run_json(main, ["tune", str(ck), "--size", f"{int(stock.size_bytes * 0.99) // 1024}K", "-o", str(out / "m"),
                         *FAST], f)
    return out, ck, stock.size_bytes, json.loads(first.read_text())


def _run_json(main, args, f):
    import contextlib

    with contextlib.redirect_stdout(f):
        try:
            main([*args, "--json"])
        except SystemExit as e:
            assert not e.code, e.code


@pytest.mark.slow
def test_tune_writes_a_file_its_recipe_and_the_verification(tuned):
    out, _, stock_bytes, res = tuned
    dst, recipe = Path(res["output"]), Path(res["recipe"])
    assert dst.is_file() and recipe.is_file() and dst.name.endswith("bpw.gguf") and "-tuned-" in dst.name
    assert res["size_bytes"] <= res["budget"]["bytes"]
    assert abs(res["size_bytes"] - res["predicted_size_bytes"]) <= 0.005 * res["size_bytes"]
    rows = {r["label"]: r for r in res["rows"]}
    assert rows["tuned"]["tuned"] and set(rows) == {"tuned", "Q3_K_M (imatrix)", "Q4_K_M (imatrix)"}  # the two either side
    # The stock file either side of the budget: an importance matrix changes no tensor's size, only the metadata.
    assert res["size_bytes"] <= stock_bytes and abs(rows["Q4_K_M (imatrix)"]["size_bytes"] - stock_bytes) < 4096
    assert rows["Q3_K_M (imatrix)"]["size_bytes"] < res["size_bytes"]
    assert all(r["kld_mean"] is not None and r["top1_pct"] is not None for r in res["rows"])
    assert res["verdict"].startswith("The tuned file")
    mf = json.loads((dst.parent / "edgeq-manifest.json").read_text())
    entry = mf["options"]["tuned"][dst.name]
    assert entry["recipe_sha256"] == res["recipe_sha256"] and entry["measured_kld"] == rows["tuned"]["kld_mean"]
    assert entry["predicted_kld"] == res["predicted_kld"] and mf["files"][dst.name]["size_bytes"] == res["size_bytes"]
    # The report edgeq report makes of the result: the table, tuned row marked, and the KLD-vs-size chart.
    report = Path(res["report"])
    text = report.read_text()
    assert "## Tune: " + dst.name in text and "**tuned**" in text and "Q4_K_M (imatrix)" in text
    charts = list(report.parent.glob("tune-kld-vs-size-*.png"))
    assert len(charts) == 1 and charts[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and charts[0].name in text


@pytest.mark.slow
def test_plan_reads_a_tuned_file_as_its_own_row(tuned, capsys):
    from conftest import run_main

    res = tuned[-1]
    dst = Path(res["output"])
    label = json.loads((dst.parent / "edgeq-manifest.json").read_text())["files"][dst.name]["type"]
    for src in (dst, dst.parent):  # the file, and the folder it is in
        code, err, out = run_main(["plan", str(src), "--ram", "8G", "--bandwidth", "50", "--json"], capsys)
        assert code == 0, err
        row = next(r for r in json.loads(out)["rows"] if r["quant"] == label)
        assert row["file_size_bytes"] == row["file_size_measured_bytes"] == res["size_bytes"]


@pytest.mark.slow
def test_the_saved_recipe_replays_with_plain_llama_quantize(tuned, tmp_path):
    from edgeq.llamacpp import find_toolchain

    res = tuned[-1]
    dst = Path(res["output"])
    f16 = next(dst.parent.glob("*-F16.gguf"))
    args = res["replay"].split()[1:]
    args = [str(dst.parent / a) if a == f16.name else (str(tmp_path / "replay.gguf") if a == dst.name else a)
            for a in args]
    subprocess.run([str(find_toolchain().tool("llama-quantize")), *args], check=True, capture_output=True)
    assert (tmp_path / "replay.gguf").read_bytes() == dst.read_bytes()


@pytest.mark.slow
def test_a_second_budget_reuses_every_measurement_and_impossible_ones_are_refused(tuned, capsys):
    from conftest import run_main

    out, ck, _, first = tuned
    work = next((out / "m" / "tune").glob("*/"))
    before = {p.name: p.stat().st_mtime_ns for p in work.iterdir()}
    imatrix = Path(first["imatrix"]).stat().st_mtime_ns
    verify = [n for n in before if n.startswith("verify-")]
    scores = {n: json.loads((work / n).read_text()) for n in verify}
    code, err, stdout = run_main(["tune", str(ck), "--bpw", "6.3", "-o", str(out / "m"), *FAST, "--json"], capsys)
    assert code == 0, (err[-300:], stdout[-300:])  # --json puts the error on stdout
    res = json.loads(stdout)
    # Nothing measured before is measured again. The stock files either side of the new size may be new
    # (Q5_K_M, say), so the verification cache may grow: by new entries only.
    assert {p.name: p.stat().st_mtime_ns for p in work.iterdir() if p.name in before and p.name not in verify} == {
        n: t for n, t in before.items() if n not in verify}
    assert all(json.loads((work / n).read_text()).items() >= scores[n].items() for n in verify)
    assert res["imatrix"] == first["imatrix"] and Path(res["imatrix"]).stat().st_mtime_ns == imatrix
    assert res["size_bytes"] > first["size_bytes"]
    tuned_files = json.loads((out / "m" / "edgeq-manifest.json").read_text())["options"]["tuned"]
    assert {Path(first["output"]).name, Path(res["output"]).name} <= set(tuned_files)  # convert keeps the records
    code, err, _ = run_main(["tune", str(ck), "--size", "2MiB", "-o", str(out / "m"), *FAST], capsys)
    assert code == 2 and "is below the smallest this model can be" in err and len(err.splitlines()) == 1
    code, err, _ = run_main(["tune", str(ck), "--max-kld", "0.0000001", "-o", str(out / "m"), *FAST], capsys)
    assert code == 2 and "no file meets --max-kld" in err
    code, err, _ = run_main(["tune", str(ck), "--size", "9MiB", "--bpw", "4", "-o", str(out / "m")], capsys)
    assert code == 2 and "exactly one budget" in err


def test_a_malformed_budget_is_refused_before_any_work(capsys):
    from conftest import run_main

    for args, needle in ((["--size", "lots"], "cannot read 'lots' as a memory size"),
                         (["--bpw", "40"], "--bpw 40.0: expected bits per weight between 1 and 16"),
                         (["--for", "nosuch"], "nosuch"), (["--max-kld", "0"], "expected a KLD above 0"),
                         (["--ram", "8G", "--for", "m1-8gb"], "exactly one budget")):
        code, err, _ = run_main(["tune", *args, "-o", "/nonexistent/never-made"], capsys)
        assert code == 2 and needle in err and len(err.splitlines()) == 1, (args, err)


def test_types_are_measured_from_near_the_budget_down_only_while_the_allocation_asks():
    from edgeq.tuning.allocate import first_types, lower_type

    allowed = {"Q8_0", "Q6_K", "Q4_K", "Q4_0", "IQ4_XS", "Q3_K", "IQ3_XXS", "Q2_K"}
    assert first_types(allowed, 6.2, {"Q3_K"}) == {"Q8_0", "Q6_K", "Q4_K", "Q4_0", "IQ4_XS", "Q3_K"}
    assert first_types(allowed, None, set()) == allowed  # a KLD target: no size to start from
    assert "Q8_0" in first_types(allowed, 14.0, {"Q3_K"})  # a generous budget still gets the widest type
    made = {"Q8_0", "Q6_K", "Q4_K"}
    wide = TensorCost("blk.0.ffn_down.weight", "ffn_out", [256, 64], {"Q8_0": 1.0, "Q6_K": 4.0, "Q4_K": 16.0})
    # At its narrowest measured type: the widest narrower one is measured next.
    assert lower_type([wide], made, 32, allowed, made, {wide.name: "Q4_K"}) == "IQ4_XS"
    assert lower_type([wide], made, 32, allowed, made, {wide.name: "Q6_K"}) is None  # nothing between Q6_K and Q4_K
    assert lower_type([wide], made, 32, allowed, made, None) == "IQ4_XS"  # a budget below every recipe
    # A gap between the type it got and a narrow probe type: Q4_K/Q4_0 lie between Q6_K and Q3_K.
    probe = {"Q8_0", "Q6_K", "Q3_K"}
    gap = TensorCost("blk.1.ffn_down.weight", "ffn_out", [256, 64], {"Q8_0": 1.0, "Q6_K": 4.0, "Q3_K": 40.0})
    assert lower_type([gap], probe, 32, allowed, probe, {gap.name: "Q6_K"}) == "Q4_K"  # ties: candidates' order
    # Rows of 576 fit no 256-block: Q3_K, IQ3_XXS and Q2_K would give it IQ4_NL, no cheaper than its Q4_0.
    narrow = TensorCost("blk.0.attn_q.weight", "attn_in", [576, 64], {"Q8_0": 1.0, "Q4_0": 16.0})
    assert lower_type([narrow], {"Q8_0", "Q4_0"}, 32, {"Q8_0", "Q4_0", "Q3_K", "IQ3_XXS", "Q2_K"},
                      {"Q8_0", "Q4_0"}, {narrow.name: "Q4_0"}) is None


def test_probe_types_spread_over_what_is_allowed():
    from edgeq.tuning.probes import probe_types

    allowed = {"Q4_0", "Q8_0", "Q4_K", "Q3_K", "Q6_K"}
    assert probe_types(allowed, "imatrix") == ["Q3_K", "Q4_K", "Q6_K"]
    assert probe_types(allowed, "fisher") == ["Q3_K"]  # Fisher-weighted errors need one
    # None preferred: the allowed ones, by bits.
    assert probe_types({"Q2_K", "IQ3_S", "Q8_0"}, "imatrix") == ["Q2_K", "IQ3_S"]
    assert probe_types({"Q2_K", "IQ3_S", "Q8_0"}, "fisher") == ["Q2_K"]


@pytest.mark.slow
def test_per_type_files_leave_fallbacks_to_their_own_file_and_probes_are_spliced_from_them(embedded_checkpoint,
                                                                                          tmp_path):
    import numpy as np
    from conftest import make_tiny_checkpoint

    from edgeq.conversion import convert
    from edgeq.conversion.steps import calibration_text, ensure_imatrix
    from edgeq.llamacpp import find_toolchain
    from edgeq.llamacpp.quantize import quantize
    from edgeq.quants import parse_quant
    from edgeq.sources.gguf_header import tensor_arrays
    from edgeq.tuning import pertype

    # Rows of 320 fit no 256-block: Q4_K falls back to Q5_0 there; ffn_down's rows of 512 take Q4_K.
    ck = make_tiny_checkpoint(tmp_path / "ck", embedded_checkpoint, hidden=320, ffn=512)
    tc = find_toolchain()
    f16 = Path(convert(str(ck), quants=["F16"], outdir=tmp_path / "out", progress=False).outputs[0].path)
    imatrix = ensure_imatrix(tc, f16, calibration_text(None), tmp_path / "out", "tiny", "r", 2, None, False)
    files = pertype.make(tc, f16, imatrix, tmp_path / "w", "tiny", ["Q4_K", "Q5_0", "Q8_0"], None, False)
    full = tmp_path / "full-Q4_K.gguf"  # what plain llama-quantize writes for the whole file
    quantize(tc, f16, full, parse_quant("Q4_K_M"), extra_args=["--pure", "--imatrix", str(imatrix)])
    whole, made = tensor_arrays(full), tensor_arrays(files["Q4_K"])
    assert pertype.types_of(files["Q4_K"]) == {n: e.type for n, (e, _) in whole.items()}
    left = {n for n, (e, _) in made.items() if e.type != whole[n][0].type}
    assert left and all(whole[n][0].type == "Q5_0" and made[n][0].type == "Q8_0" for n in left)
    own = tensor_arrays(files["Q5_0"])
    for n, (_, data) in whole.items():  # every tensor's bytes are in one of the files, as llama-quantize made them
        assert np.array_equal(data, (own if n in left else made)[n][1]), n
    # A probe (the feed-forward at Q4_K, its fallbacks at Q5_0, the rest Q8_0) spliced from those files is, tensor for
    # tensor, what llama-quantize writes from F16 for the same recipe, and llama.cpp gives it the same logits.
    from edgeq.quality.models import gguf_ref, open_scorer
    from edgeq.tuning.sensitivity import tensor_type_rules

    kinds = pertype.types_of(files["Q4_K"])
    recipe = {n: kinds[n] if ".ffn_" in n else "Q8_0" for n in kinds if n in made
              and made[n][0].type not in ("F32", "F16")}
    assert {"Q4_K", "Q5_0", "Q8_0"} <= set(recipe.values())
    rules = tmp_path / "rules.txt"
    rules.write_text(tensor_type_rules(recipe))
    quantized, spliced = tmp_path / "quantized.gguf", tmp_path / "spliced.gguf"
    quantize(tc, f16, quantized, parse_quant("Q8_0"), extra_args=["--imatrix", str(imatrix), "--tensor-type-file",
                                                                   str(rules)])
    index = pertype.holders(files)
    pertype.splice(files["Q8_0"], {n: index[n, t] for n, t in recipe.items()}, spliced)
    a, b = tensor_arrays(quantized), tensor_arrays(spliced)
    assert list(a) == list(b)
    for n, (e, data) in a.items():
        assert b[n][0].type == e.type and np.array_equal(data, b[n][1]), n
    logits = []
    for path in (quantized, spliced):
        scorer = open_scorer(gguf_ref(path), n_ctx=64, threads=1)
        try:
            logits.append(np.array(scorer.logits(scorer.tokenize("To be, or not to be, that is the question"))))
        finally:
            scorer.close()
    assert np.array_equal(logits[0], logits[1])
