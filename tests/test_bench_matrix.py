"""The bench matrix's machinery: workers kept between rounds, the ETA, the bandwidth ceiling and its warnings."""
from __future__ import annotations

from dataclasses import replace

import pytest

from edgeq.benchmarking.eta import ETA, human_seconds, prior
from edgeq.benchmarking.results import RunResult, RunSpec, Stat
from edgeq.benchmarking.runs import WorkerPool
from edgeq.benchmarking.verdict import roofline
from edgeq.sources.gguf import bytes_read_per_token, read
from edgeq.sources.gguf_header import TensorEntry


def _spec(path: str, variant: str = "Q8_0", batch: int = 1) -> RunSpec:
    # One thread: beside the other pytest-xdist worker on two cores, two threads spinning at llama.cpp's barriers
    # made these six tiny measures take 70 s.
    return RunSpec("m", path, "llama.cpp", variant, "cpu", 1, batch, 8, 2, 1, {"en": "The capital of France is"})


def _ok(variant: str, tg: float, weight_bytes: int, *, load_s: float = 2.0) -> RunResult:
    return RunResult("m", "p", "llama.cpp", variant, "cpu", 2, 1, "en", 8, 2, 1, "ok", load_s=load_s,
                     pp_tps=Stat.of([100.0]), tg_tps=Stat.of([tg]), weight_bytes=weight_bytes)


def test_pool_loads_each_model_once_across_rounds(embedded_outputs):
    q8 = next(str(p) for p in embedded_outputs if p.name.endswith("Q8_0.gguf"))
    with WorkerPool([_spec(q8), _spec(q8, batch=2)], budget_bytes=1 << 40) as pool:
        rounds = [[pool.measure(i) for i in range(2)] for _ in range(3)]
        assert pool.loads == [1, 1]
    for i in range(2):
        pids = {r.pid for rnd in rounds for r in rnd[i]}
        assert len(pids) == 1 and all(r.status == "ok" and r.load_s for rnd in rounds for r in rnd[i])
    assert {r.pid for r in rounds[0][0]} != {r.pid for r in rounds[0][1]}  # one process per spec


def test_pool_restarts_workers_when_memory_is_short(embedded_outputs):
    q8 = next(str(p) for p in embedded_outputs if p.name.endswith("Q8_0.gguf"))
    with WorkerPool([_spec(q8), _spec(q8, batch=2)], budget_bytes=0) as pool:
        pids = [{r.pid for r in pool.measure(i)} for _ in range(2) for i in range(2)]
        assert pool.loads == [2, 2] and len(set().union(*pids)) == 4
        assert len(pool.live) <= 1  # only the worker just used is ever kept


def test_a_worker_killed_between_rounds_is_a_failed_round_then_a_fresh_worker(embedded_outputs):
    import os
    import signal

    q8 = next(str(p) for p in embedded_outputs if p.name.endswith("Q8_0.gguf"))
    with WorkerPool([_spec(q8)], budget_bytes=1 << 40) as pool:
        assert all(r.status == "ok" for r in pool.measure(0))
        os.kill(pool.live[0].pid, signal.SIGKILL)  # say, the OOM killer while another spec loaded
        (dead,) = pool.measure(0)
        assert dead.status == "failed" and "exited -9" in (dead.reason or "") and not pool.live
        assert all(r.status == "ok" for r in pool.measure(0)) and pool.loads == [2]


def test_a_worker_that_fails_is_replaced_next_round(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with WorkerPool([_spec(str(bad))], budget_bytes=1 << 40) as pool:
        for _ in range(2):
            (r,) = pool.measure(0)
            assert r.status == "failed" and r.reason
        assert pool.loads == [2] and not pool.live


def test_roofline_ceiling_is_the_best_reading_and_beating_it_is_flagged():
    runs = [_ok("F32", 10.0, 2 * 10**9), _ok("Q8_0", 40.0, 10**9)]
    r = roofline(runs, [{"read_gbps": 25.0}, None, {"read_gbps": 30.0}])
    assert r["bandwidth"]["read_gbps"] == 30.0 and r["bandwidth"]["readings_gbps"] == [25.0, 30.0]
    f32, q8 = r["rows"]
    assert f32["fraction"] == pytest.approx(20 / 30, abs=1e-3) and f32["read_gbps"] == 20.0
    assert q8["fraction"] == pytest.approx(40 / 30, abs=1e-3)
    beaten = [w for w in r["warnings"] if "ceiling is wrong" in w]
    assert len(beaten) == 1 and "Q8_0" in beaten[0] and "40.0 GB/s" in beaten[0]
    assert not any("moved" in w for w in r["warnings"])  # 25 vs 30 GB/s: 17%, within the 20% allowed
    calm = roofline(runs[:1], [{"read_gbps": 29.0}, {"read_gbps": 30.0}])
    assert calm["warnings"] == []


def test_drift_above_a_fifth_is_warned_of():
    r = roofline([_ok("F32", 10.0, 2 * 10**9)], [{"read_gbps": 20.0}, {"read_gbps": 30.0}])
    assert r["bandwidth"]["spread"] == pytest.approx(0.333, abs=1e-3)
    assert any("moved 33%" in w for w in r["warnings"])


def test_eta_guesses_first_then_uses_measured_times(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"\0" * 10**6)
    specs = [_spec(str(f)), _spec(str(f), batch=2)]
    load, per_round = prior(specs[0], 30.0)
    assert load > 0 and per_round > 0
    eta = ETA(specs, 3, 30.0)
    assert eta.guessed and eta.total() == pytest.approx(sum(sum(prior(s, 30.0)) + 2 * prior(s, 30.0)[1]
                                                            for s in specs))
    eta.record(0, 12.0, [_ok("Q8_0", 10, 1, load_s=2.0)], loaded=True)
    eta.record(1, 5.0, [_ok("Q8_0", 10, 1, load_s=1.0)], loaded=True)
    assert not eta.guessed
    # Rounds 2 and 3 left, both workers alive: 2 × (10 + 4) seconds, no loads.
    assert eta.left(0, 1, live={0, 1}) == pytest.approx(28.0)
    # Worker 1 stopped for memory: it loads again once, then stays.
    assert eta.left(0, 1, live={0}) == pytest.approx(29.0)
    assert human_seconds(42) == "42 s" and human_seconds(200) == "3 min 20 s" and human_seconds(3900) == "1 h 05 min"


def test_a_token_reads_one_row_of_an_untied_embedding_and_all_of_a_tied_one():
    emb = TensorEntry("token_embd.weight", [64, 1000], "F16", n_bytes=128_000)
    blk = TensorEntry("blk.0.attn_q.weight", [64, 64], "F16", n_bytes=8192)
    out = TensorEntry("output.weight", [64, 1000], "Q8_0", n_bytes=68_000)
    assert bytes_read_per_token([emb, blk, out], [128_000, 8192, 68_000]) == [128, 8192, 68_000]
    assert bytes_read_per_token([emb, blk], [128_000, 8192]) == [128_000, 8192]


def test_gguf_info_counts_the_bytes_a_token_reads(embedded_outputs):
    for p in embedded_outputs:
        info = read(p)  # SmolLM2 ties its embedding to the output: every byte is read
        assert info.bytes_per_token == sum(s.bytes for s in info.tensor_types.values())


def test_transformers_bytes_per_token_leave_out_an_untied_embedding():
    import torch
    import transformers

    from edgeq.backends.transformers import _unread_embedding_bytes

    cfg = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
               num_key_value_heads=2)
    untied = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg, tie_word_embeddings=False))
    tied = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg, tie_word_embeddings=True))
    assert _unread_embedding_bytes(untied.to(torch.float32)) == 999 * 64 * 4
    assert _unread_embedding_bytes(tied) == 0


def test_merged_rounds_count_their_loads():
    from edgeq.benchmarking.matrix import merge_rounds

    a, b = replace(_ok("Q8_0", 10, 1), pid=7), replace(_ok("Q8_0", 12, 1), pid=7)
    (m,) = merge_rounds([[a], [b]])
    assert m.loads == 1 and m.reps == 2 and m.tg_tps is not None and m.tg_tps.samples == [10, 12]
    (m,) = merge_rounds([[a], [replace(b, pid=8)]])
    assert m.loads == 2
