"""edgeq bench and report: behaviour, not speed."""
import json

import pytest

from edgeq.benchmarking import matrix
from edgeq.benchmarking.prompts import DEFAULT_PROMPTS, fit, load_prompts, sequences
from edgeq.benchmarking.results import CSV_FIELDS, BenchResults, RunResult, RunSpec, Stat, csv_rows
from edgeq.benchmarking.runs import run_worker
from edgeq.benchmarking.verdict import HOLDS_AT, roofline, verdicts
from edgeq.cli import main
from edgeq.errors import UsageError
from edgeq.reporting import report


def row(backend, variant, pp, tg, batch=1, prompt="en", rss=100, weight_bytes=1_000_000):
    return RunResult(model="m", path=f"m-{variant}", backend=backend, variant=variant, device="cpu", threads=2,
                     batch=batch, prompt=prompt, n_prompt=16, n_gen=8, reps=1, status="ok", load_s=1.0,
                     pp_tps=Stat.of([pp]), tg_tps=Stat.of([tg]), ms_per_token=1000 * batch / tg, peak_rss_bytes=rss,
                     weight_bytes=weight_bytes, bits_per_weight=8.5, n_params=10)


RUNS = [row("llama.cpp", "F32", 400, 44.5, rss=600), row("llama.cpp", "F16", 533, 63.8, rss=350),
        row("llama.cpp", "Q8_0", 365, 103.6, rss=200), row("llama.cpp", "Q4_K_M", 300, 116.3, rss=150),
        row("transformers", "fp32", 300, 20.0, rss=900), row("transformers", "bnb-int8", 200, 10.0, rss=1000)]


def test_verdicts_split_prompt_processing_from_generation():
    vs = {v.variant: v for v in verdicts(RUNS)}
    assert set(vs) == {"Q8_0", "Q4_K_M", "bnb-int8"}
    q8 = vs["Q8_0"]
    assert q8.vs["F32 GGUF"]["tg"] == pytest.approx(103.6 / 44.5, abs=1e-3)
    assert q8.vs["F32 GGUF"]["pp"] == pytest.approx(365 / 400, abs=1e-3)
    assert q8.vs["transformers fp32"]["tg"] == pytest.approx(103.6 / 20, abs=1e-3)
    assert q8.holds is True and "HOLDS" in q8.sentence and "103.6 vs 44.5" in q8.sentence
    assert "prompt processing 0.91× (slower)" in q8.sentence
    bnb = vs["bnb-int8"]
    assert bnb.holds is False and "does NOT hold" in bnb.sentence and "transformers fp32" in bnb.sentence
    assert HOLDS_AT > 1


def test_verdict_without_a_baseline_says_so():
    (v,) = verdicts([row("llama.cpp", "Q8_0", 1, 1)])
    assert v.holds is None and "no full-precision run" in v.sentence


def test_roofline_fraction():
    r = roofline([row("llama.cpp", "Q8_0", 100, 20, weight_bytes=2 * 10**9)], [{"read_gbps": 40.0}])
    (x,) = r["rows"]
    assert x["roofline_tps"] == pytest.approx(20.0) and x["fraction"] == pytest.approx(1.0)
    assert roofline(RUNS, [None])["rows"] == [] and not r["warnings"]


def test_csv_rows_use_llama_bench_names():
    rows = csv_rows(RUNS[:1])
    assert [r["test"] for r in rows] == ["pp", "tg"] and list(rows[0]) == CSV_FIELDS
    assert rows[1]["avg_ts"] == 44.5 and rows[0]["n_gen"] == 0


def test_prompts_fit_exactly_and_sequences_differ():
    toks = fit([1, 5, 6, 7], 10, keep_first=1)
    assert toks == [1, 5, 6, 7, 5, 6, 7, 5, 6, 7]
    seqs = sequences(fit(list(range(2, 40)), 32), 4)
    assert len({tuple(s) for s in seqs}) == 4 and {len(s) for s in seqs} == {32}
    assert set(load_prompts(None)) == {"en", "hi"} and DEFAULT_PROMPTS["hi"].startswith("भारत")


def test_prompt_file(tmp_path):
    (tmp_path / "mine.txt").write_text("hello there")
    assert load_prompts(tmp_path / "mine.txt") == {"mine": "hello there"}
    with pytest.raises(UsageError, match="empty"):
        (tmp_path / "e.txt").write_text(" ")
        load_prompts(tmp_path / "e.txt")


def test_unavailable_backend_is_skipped_with_its_reason(monkeypatch):
    import edgeq.backends.transformers as hf

    monkeypatch.setattr(hf, "unavailable_reason", lambda v, d: "no CUDA GPU is visible to torch")
    spec = RunSpec("m", "x", "transformers", "bnb-int8", "cuda", 2, 1, 8, 4, 1, {"en": "hi"})
    (r,) = run_worker(spec)
    assert r.status == "skipped" and r.reason == "no CUDA GPU is visible to torch"


def test_ctrl_c_keeps_the_runs_already_measured(tmp_path, monkeypatch):
    gguf = tmp_path / "m-Q8_0.gguf"
    calls = []

    class FakePool:
        def __init__(self, specs):
            self.specs, self.live, self.loads = specs, {}, [0] * len(specs)

        def measure(self, i):
            calls.append(i)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return [row("llama.cpp", self.specs[i].variant, 10, 5)]

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(matrix, "plan_models", lambda models, q, p, **kw: ([("m", gguf, "Q8_0")], []))
    monkeypatch.setattr(matrix, "WorkerPool", FakePool)
    monkeypatch.setattr(matrix, "measure_bandwidth", lambda threads=None: {"read_gbps": 40.0})
    out = tmp_path / "r.json"
    with pytest.raises(KeyboardInterrupt):
        matrix.bench([str(gguf)], batches=[1, 16], output=out, progress=False)
    saved = json.loads(out.read_text())
    assert saved["interrupted"] is True and len(saved["runs"]) == 1


@pytest.mark.parametrize("args,code,message", [
    (["bench", "nope/missing.gguf"], 2, "does not exist"),
    (["bench", "{notgguf}"], 1, "is not a GGUF file"),
    (["bench", "{gguf}", "--quants", "Q9_X"], 2, "unknown quantization type 'Q9_X'"),
    (["bench", "{gguf}", "--device", "metal"], 2, "--device metal needs an Apple Silicon Mac"),
    (["bench", "{gguf}", "--batch", "1,x"], 2, "not a comma-separated list of integers"),
])
def test_bad_inputs_are_one_clear_line(args, code, message, tmp_path, capsys, monkeypatch):
    import platform

    monkeypatch.setattr(platform, "system", lambda: "Linux")
    (tmp_path / "x.gguf").write_bytes(b"GGUF" + b"\0" * 16)
    (tmp_path / "notgguf.bin").write_bytes(b"PK\x03\x04")
    args = [a.format(gguf=tmp_path / "x.gguf", notgguf=tmp_path / "notgguf.bin") for a in args]
    with pytest.raises(SystemExit) as e:
        main([*args, "-o", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == code, err
    assert message in err and len(err.splitlines()) == 1


def test_report_writes_markdown_and_nonempty_pngs(tmp_path):
    from dataclasses import asdict

    res = BenchResults("edgeq-bench/1", {"cpu": "Test CPU", "physical_cores": 2, "logical_cores": 2,
                                         "cpu_features": ["avx2"], "ram_total_bytes": 2**34, "os": "Linux",
                                         "threads": 2, "date": "2026-11-23", "versions": {"edgeq": "0.1.0"}},
                       {"n_prompt": 16}, runs=RUNS, verdicts=verdicts(RUNS),
                       roofline=roofline(RUNS, [{"read_gbps": 40.0}]))
    (tmp_path / "r.json").write_text(json.dumps(asdict(res)))
    main(["report", str(tmp_path / "r.json"), "-o", str(tmp_path / "rep")])
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "HOLDS" in md and "Test CPU" in md and "NVIDIA A40" in md and "other hardware" in md
    for png in ("tokens_per_s.png", "memory.png", "speedup.png"):
        data = (tmp_path / "rep" / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000


def test_report_rejects_a_file_that_is_not_bench_results(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(UsageError, match="not an edgeq bench result"):
        report([tmp_path / "x.json"], tmp_path / "rep")


@pytest.mark.slow
def test_bench_end_to_end(tiny_llama, tmp_path):
    """Real workers: two GGUF quants and transformers fp32, tiny -p/-n, two rounds.  A tiny Llama: what is checked
    is the matrix, the processes and the report, not a model's speed (the embedded model's figures are
    `benchmarks/embedded.sh`'s, in benchmarks/results/embedded.json)."""
    import os

    from edgeq.conversion import convert

    res = convert(str(tiny_llama), quants=["F32", "Q8_0"], outdir=tmp_path / "gguf", progress=False)
    ggufs = [o.path for o in res.outputs if o.type in ("F32", "Q8_0")]
    out, csv_path = tmp_path / "b.json", tmp_path / "b.csv"
    main(["bench", *ggufs, str(tiny_llama), "--quants", "", "--hf", "fp32", "-p", "16", "-n", "4",
          "-r", "2", "--batch", "1,2", "-t", "1", "--check-llama-bench", "-o", str(out), "--csv", str(csv_path)])
    data = json.loads(out.read_text())
    ok = [r for r in data["runs"] if r["status"] == "ok"]
    assert {(r["backend"], r["variant"]) for r in ok} == {("llama.cpp", "F32"), ("llama.cpp", "Q8_0"),
                                                           ("transformers", "fp32")}
    assert len(ok) == 3 * 2 * 2  # variants × batches × prompts (en, hi)
    for r in ok:
        for k in ("pp_tps", "tg_tps"):
            assert 0 < r[k]["min"] <= r[k]["median"] <= r[k]["max"]
        assert r["load_s"] > 0 and r["peak_rss_bytes"] > 0 and r["ms_per_token"] > 0 and r["sample"]
    pids = {r["pid"] for r in ok}
    assert len(pids) == 3 * 2 and os.getpid() not in pids  # one process per variant × batch
    assert {r["loads"] for r in ok} == {1} and data["timing"]["loads"] == 6  # each loaded once for both rounds
    assert data["timing"]["matrix_s"] > 0 and data["timing"]["estimated_s"] > 0
    assert len(data["roofline"]["bandwidth"]["readings_gbps"]) == 3  # before the first round, after each
    for r in data["roofline"]["rows"]:  # a run above the ceiling is never left unsaid
        if r["fraction"] > 1:
            assert any(f"{r['variant']} batch {r['batch']} ({r['prompt']})" in w and "ceiling is wrong" in w
                       for w in data["roofline"]["warnings"])
    assert any(v["variant"] == "Q8_0" and "F32 GGUF" in v["vs"] for v in data["verdicts"])
    assert data["roofline"]["bandwidth"]["read_gbps"] > 0 and data["roofline"]["rows"]
    assert {c["variant"] for c in data["llama_bench"]} == {"F32", "Q8_0"}
    assert csv_path.read_text().splitlines()[0].startswith("model_filename,model_type")
    main(["report", str(out), "-o", str(tmp_path / "rep")])
    assert (tmp_path / "rep" / "tokens_per_s.png").stat().st_size > 1000


def test_published_ratios_pair_each_quantized_row_with_its_full_precision_row():
    from edgeq.reporting import published_ratios

    rows = {(r[1], r[2]): r for r in published_ratios()}
    assert rows[("meta-llama/Llama-3.2-1B", "bnb-int8")][3] == "0.33×"  # 0.05 s ÷ 0.15 s: slower on the GPU
    assert rows[("meta-llama/Llama-3.2-1B", "bnb-int8")][4] == "0.69×"  # 7000 ÷ 10200 MB
    assert rows[("facebook/opt-350m", "bnb-int8")][3] == "1.60×"
    assert all("full-precision" not in cfg for _, cfg in rows)
