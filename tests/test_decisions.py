"""The objective behind plan's and ship's picks (issue 33): pure logic, no model, no run."""
from __future__ import annotations

import pytest

from edgeq.benchmarking.noise import busy_reason
from edgeq.benchmarking.results import RunResult, Stat
from edgeq.errors import UsageError
from edgeq.planning.objective import NEAR_LOSSLESS_KLD, PREDICTED_BAND, band, choose, dominated_by
from edgeq.planning.recommend import Candidate, recommend
from edgeq.shipping.decide import pick
from edgeq.shipping.result import Option

GIB = 1024**3


def _c(q: str, tg: float, kld: float | None, *, lo: float | None = None, hi: float | None = None,
       pp: float | None = None, ram: int = GIB, budget: int = 8 * GIB) -> Candidate:
    return Candidate("m", q, 10, ram, budget, tg, kld, pp, lo, hi)


# The 0.5B ship on a quiet machine: F16 tg 30.3; Q8_0 44.2 (KLD 0.0010); Q6_K 49.6 (0.0017); Q4_K_M 48.9.
QWEN = [_c("F16", 30.3, 0.0, lo=29.8, hi=30.9, ram=2 * GIB), _c("Q8_0", 44.2, 0.0010, lo=43.5, hi=45.0),
        _c("Q6_K", 49.6, 0.0017, lo=48.9, hi=50.3), _c("Q4_K_M", 48.9, 0.0045, lo=48.0, hi=49.7),
        _c("Q4_0", 60.0, 0.05, lo=59.0, hi=61.0)]


def test_speed_is_the_default_and_picks_the_fastest_near_lossless():
    rec = recommend(QWEN)
    assert rec.ok and rec.prefer == "speed" and rec.kld_bound == NEAR_LOSSLESS_KLD
    # Q6_K and Q4_K_M overlap (48.9–50.3 vs 48.0–49.7): within noise; pp ties too (none), so the lower KLD decides.
    assert rec.quant == "Q6_K" and rec.within_noise == ["Q4_K_M"]
    assert "within noise" in rec.sentence and "KLD decided" in rec.sentence
    assert "1.64× F16's speed" in rec.sentence and "F16 would have KLD 0.0000" in rec.sentence
    assert "39% slower" in rec.sentence
    assert "Q4_0" not in rec.sentence  # KLD 0.05 is outside the bound however fast


def test_quality_is_the_old_rule_and_size_the_least_ram():
    assert recommend(QWEN, prefer="quality").quant == "F16"
    sized = [_c("Q8_0", 44.2, 0.001, ram=2 * GIB), _c("Q6_K", 40.0, 0.002, ram=GIB), _c("Q4_0", 60, 0.05, ram=GIB // 2)]
    assert recommend(sized, prefer="size").quant == "Q6_K"


def test_max_kld_replaces_the_bound_and_min_tps_stays_a_constraint():
    assert recommend(QWEN, max_kld=0.06).quant == "Q4_0"
    rec = recommend(QWEN, min_tps=55)  # only Q4_0 is fast enough: nothing near-lossless, so the best quality
    assert rec.quant == "Q4_0" and "none within KLD 0.01" in rec.sentence and rec.kld_bound is None


def test_pp_decides_when_generation_is_within_noise():
    cands = [_c("Q5_0", 50.0, 0.004, lo=47, hi=53, pp=90), _c("Q5_K", 49.0, 0.004, lo=46, hi=52, pp=240)]
    rec = recommend(cands)
    assert rec.quant == "Q5_K" and "prompt speed decided" in rec.sentence


def test_predicted_speeds_are_equal_within_the_plan_band():
    assert band(100.0) == pytest.approx((100 * (1 - PREDICTED_BAND), 100 * (1 + PREDICTED_BAND)))
    cands = [_c("Q8_0", 100.0, 0.001), _c("Q6_K", 103.0, 0.005)]  # 3% apart, predicted: the lower KLD
    assert recommend(cands).quant == "Q8_0"
    cands = [_c("Q8_0", 100.0, 0.001), _c("Q6_K", 130.0, 0.005)]
    assert recommend(cands).quant == "Q6_K"


def test_unknown_prefer_is_a_usage_error():
    with pytest.raises(UsageError, match="--prefer fastest"):
        recommend(QWEN, prefer="fastest")


def test_pareto_front_marks_the_dominated():
    dom = dominated_by(QWEN)
    assert dom["Q4_K_M"] is None or dom["Q4_K_M"] != "Q6_K"  # Q6_K is not faster beyond noise
    slow = [_c("F16", 30, 0.0, lo=29, hi=31), _c("Q5_1", 25, 0.01, lo=24, hi=26), _c("Q8_0", 44, 0.001, lo=43, hi=45)]
    dom = dominated_by(slow)
    assert dom == {"F16": None, "Q5_1": "Q8_0", "Q8_0": None}


def test_the_pick_is_never_dominated():
    import random

    rnd = random.Random(3)
    for _ in range(500):
        cands = []
        for i in range(rnd.randint(1, 6)):
            tg = rnd.uniform(10, 100)
            w = rnd.uniform(0, 0.2) * tg
            cands.append(_c(f"T{i}", tg, rnd.choice([0.0005, 0.002, 0.004, 0.008, 0.02, 0.06]), lo=tg - w, hi=tg + w,
                            pp=rnd.uniform(50, 300)))
        for prefer in ("speed", "quality", "size"):
            best = next(c for c in cands if c.quant == recommend(cands, prefer=prefer).quant)
            assert not [c for c in cands if c.kld <= best.kld and c.tg_range[0] > best.tg_range[1]]  # type: ignore[operator]


def test_choose_orders_each_objective():
    ch = choose(QWEN[:3], "speed")
    assert ch.best.quant == "Q6_K" and not ch.ties


def _opt(label: str, tg: float, kld: float | None, lo: float, hi: float) -> Option:
    return Option(label, f"/m/{label}.gguf", GIB, 8.0, kld, None, None, tg, 100.0, None, GIB, tg, True, True,
                  tg_low_target=lo, tg_high_target=hi, pp_tps_target=100.0, pp_low_target=95, pp_high_target=105)


def test_ship_pick_reverses_nothing_on_noise():
    # The README's busy ship: F16 2.97, Q8_0 2.80 tok/s: overlapping ranges are a tie, and the lower KLD decides.
    opts = [_opt("F16", 2.97, None, 2.2, 3.5), _opt("Q8_0", 2.80, 0.001, 2.1, 3.4)]
    rec, runner = pick(opts, device_budget=8 * GIB, min_tps=None, max_kld=None)
    assert rec.quant == "F16" and "within noise" in rec.sentence and runner and runner.quant == "Q8_0"
    assert all(o.dominated_by is None for o in opts)
    opts = [_opt("F16", 30.3, None, 29.8, 30.9), _opt("Q6_K", 49.6, 0.0017, 48.9, 50.3)]
    rec, _ = pick(opts, device_budget=8 * GIB, min_tps=None, max_kld=None)
    assert rec.quant == "Q6_K" and opts[0].dominated_by is None  # F16's KLD (0) is the lowest: on the front


def _run(variant: str, samples: list[float]) -> RunResult:
    return RunResult("m", f"/m/{variant}.gguf", "llama.cpp", variant, "cpu", 2, 1, "en", 128, 64, len(samples), "ok",
                     tg_tps=Stat.of(samples))


def test_busy_is_said_from_spread_or_load():
    quiet = [_run("F16", [30, 30.5, 31]), _run("Q8_0", [44, 45, 44.5])]
    assert busy_reason(quiet, [2.1, 2.3], cores=2, threads=2) is None
    noisy = [_run("F16", [20, 30, 31])]
    assert "F16's generation speed spread 37%" in (busy_reason(noisy, [], cores=2, threads=2) or "")
    assert "load of about 1.8" in (busy_reason(quiet, [3.8, 3.9], cores=2, threads=2) or "")


# --- tune: the speed floor against the stock recipe (speedcap) ------------------------------------------------

def _tune_case():
    from edgeq.tuning.sensitivity import Calibration, TensorCost
    from edgeq.tuning.speedcap import TypeSpeed

    cal = Calibration({"ffn_in": 1.0, "ffn_out": 1.0, "floor": 0.001}, [])
    # Q5_1 is the least error per byte here but slow (as on x86); Q4_K fast; Q8_0 wide.
    errs = {"Q8_0": 1.0, "Q5_1": 3.0, "Q4_K": 6.0}
    costs = [TensorCost(f"blk.{i}.ffn_up.weight", "ffn_in", [256, 256], dict(errs)) for i in range(8)]
    speeds = {"Q8_0": TypeSpeed(pp_s=1.0, tg_s=1.0, bytes=272, weights=256),
              "Q5_1": TypeSpeed(pp_s=3.0, tg_s=1.6, bytes=192, weights=256),
              "Q4_K": TypeSpeed(pp_s=1.0, tg_s=0.6, bytes=144, weights=256)}
    return cal, costs, speeds


def test_tune_speed_floor_trades_kld_for_speed_only_as_far_as_needed():
    from edgeq.tuning.allocate import allocate, padded
    from edgeq.tuning.speedcap import allocate_within, recipe_time, tensor_time

    cal, costs, speeds = _tune_case()
    cost = tensor_time(speeds)
    budget = sum(padded(c.shape, "Q5_1", 32) for c in costs)
    free = allocate(costs, cal, budget, allowed={"Q8_0", "Q5_1", "Q4_K"}, alignment=32)
    assert set(free.types.values()) == {"Q5_1"}  # KLD alone: every tensor on the slow type
    stock = {c.name: "Q4_K" for c in costs}
    limit = recipe_time(costs, stock, cost)
    capped, met = allocate_within(costs, cal, budget, allowed={"Q8_0", "Q5_1", "Q4_K"}, alignment=32, cost=cost,
                                  limit=limit)
    pp, tg = recipe_time(costs, capped.types, cost)
    assert met and pp <= limit[0] * 1.000001 and tg <= limit[1] * 1.000001
    assert capped.tensor_bytes <= budget and capped.predicted_kld >= free.predicted_kld
    # It gives up only the KLD the floor needs: no worse than the stock recipe, all Q4_K.
    assert capped.predicted_kld <= sum(c.errors["Q4_K"] for c in costs) + 0.001 + 1e-12
    loose, met = allocate_within(costs, cal, budget, allowed={"Q8_0", "Q5_1", "Q4_K"}, alignment=32, cost=cost,
                                 limit=(limit[0] * 100, limit[1] * 100))
    assert met and loose.types == free.types  # a floor the KLD-only file already meets changes nothing


def test_tune_speed_floor_spends_the_slack_one_price_leaves():
    """Like tensors choose alike at one price of time, so the cheapest price that meets a floor 10% looser than
    stock's jumps to all-Q4_K; the slack it leaves (one tensor's worth of Q8_0) is spent: the exact optimum."""
    import itertools

    from edgeq.tuning.allocate import padded
    from edgeq.tuning.speedcap import allocate_within, recipe_time, tensor_time

    cal, costs, speeds = _tune_case()
    cost = tensor_time(speeds)
    allowed = {"Q8_0", "Q5_1", "Q4_K"}
    budget = sum(padded(c.shape, "Q5_1", 32) for c in costs)
    stock = recipe_time(costs, {c.name: "Q4_K" for c in costs}, cost)
    limit = (stock[0] * 1.1, stock[1] * 1.1)
    got, met = allocate_within(costs, cal, budget, allowed=allowed, alignment=32, cost=cost, limit=limit)
    pp, tg = recipe_time(costs, got.types, cost)
    assert met and pp <= limit[0] * 1.000001 and tg <= limit[1] * 1.000001
    assert got.tensor_bytes == sum(padded(c.shape, got.types[c.name], 32) for c in costs) <= budget
    best = min(sum(c.errors[t] for c, t in zip(costs, pick)) for pick in itertools.product(sorted(allowed), repeat=len(costs))
               if sum(padded(c.shape, t, 32) for c, t in zip(costs, pick)) <= budget
               and all(x <= y * 1.000001 for x, y in zip(recipe_time(costs, dict(zip([c.name for c in costs], pick)), cost), limit)))
    assert best < sum(c.errors["Q4_K"] for c in costs)  # the case has a gap to close
    assert got.predicted_kld == pytest.approx(best + 0.001)


def test_predicted_type_speeds_follow_the_kernel_table():
    from edgeq.planning import kernels
    from edgeq.tuning.speedcap import predicted_types

    sp = predicted_types({"Q4_0", "Q5_1"}, "x86")
    assert sp["Q5_1"].pp_s / sp["Q4_0"].pp_s == pytest.approx(1 / kernels.factors("x86", "Q5_1")[1])
    assert kernels.factors("metal", "Q5_1") == (1.0, 1.0) and kernels.factors(None, "Q5_1") == (1.0, 1.0)


# --- speed per type, not per byte (plan.kernels, speed.effective_bytes) -------------------------------------------

def test_a_calibration_from_three_types_predicts_the_others_by_their_kernels():
    from edgeq.planning import kernels, speed
    from edgeq.planning.calibrate import fit_families

    bw, q4 = 30.0, 0.5  # GB/s, and Q4_0's share of it
    mb = 10**6
    pure = {t: {t: int(b * mb)} for t, b in {"F16": 900, "Q8_0": 480, "Q6_K": 370, "Q5_K": 310, "Q5_0": 310,
                                             "Q5_1": 340, "Q4_K": 250, "Q4_0": 250, "Q4_1": 280, "IQ4_XS": 240,
                                             "Q3_K": 195, "Q2_K": 150}.items()}

    def truth(t: str) -> float:  # tok/s if every type runs at Q4_0's efficiency × its factor, + 3 ms a token
        return 1 / (0.003 + pure[t][t] / (bw * 1e9 * q4 * kernels.factors("x86", t)[0]))

    small = {t: {k: v // 4 for k, v in b.items()} for t, b in pure.items()}
    pts = [(speed.effective_bytes(b, "x86"), sum(b.values()) // 2, 1 / (0.003 + sum(b.values()) / (
        bw * 1e9 * q4 * kernels.factors("x86", t)[0]))) for t, b in [*[(t, pure[t]) for t in ("F16", "Q8_0", "Q4_K")],
                                                                      *[(t, small[t]) for t in ("F16", "Q4_K")]]]
    fit = fit_families(pts, bw)
    for t in pure:
        got = speed.tg_tps(speed.effective_bytes(pure[t], "x86"), bandwidth_gbps=bw, efficiency=fit.efficiency,
                           family_efficiency=fit.family_efficiency, overhead_s=fit.overhead_s)[0]
        assert got == pytest.approx(truth(t), rel=0.02), t
    # By bytes alone (no kernel table) the slow legacy types would be predicted as fast as their size says.
    naive = speed.tg_tps(speed.effective_bytes(pure["Q5_1"], None), bandwidth_gbps=bw, efficiency=fit.efficiency,
                         family_efficiency=fit.family_efficiency, overhead_s=fit.overhead_s)[0]
    assert kernels.factors("x86", "Q5_1")[0] == 1.0 or naive > truth("Q5_1") * 1.1


def test_a_measured_family_within_its_runs_spread_runs_at_the_pooled_level():
    """A family whose own rate differs from the pooled level by less than the spread of the runs it dominates runs
    at the pooled level: not at its one noisy run's, nor at the fallback of a family no run covered (which made a
    calibration's own Q8_0 run predicted 23% off its measurement)."""
    from edgeq.planning.calibrate import fit_families

    bw, mb = 30.0, 10**6

    def fit(k_off: float, k_spread: float):  # the Q4_K run that much faster than the other two, that noisy
        pts = [({"F32": 0, "F16": 900 * mb, "Q8_0": 0, "Q4_0": 0, "K": 0}, 450 * mb, bw * 1e9 * 0.5 / (900 * mb)),
               ({"F32": 0, "F16": 0, "Q8_0": 480 * mb, "Q4_0": 0, "K": 0}, 450 * mb, bw * 1e9 * 0.4 / (480 * mb)),
               ({"F32": 0, "F16": 0, "Q8_0": 0, "Q4_0": 0, "K": 250 * mb}, 450 * mb,
                (1 + k_off) * bw * 1e9 * 0.5 / (250 * mb))]
        return fit_families(pts, bw, spreads=[0.01, 0.01, k_spread])

    quiet = fit(0.2, 0.02)
    assert quiet.family_efficiency == pytest.approx({"F16": 0.5, "Q8_0": 0.4, "K": 0.6}, rel=1e-6)
    noisy = fit(0.2, 0.5)
    assert noisy.family_efficiency["K"] == noisy.efficiency and noisy.family_efficiency["Q8_0"] == pytest.approx(0.4)


def test_prompt_speed_counts_each_type_at_its_kernel_rate():
    from edgeq.planning import kernels, speed

    w = {"Q5_1": 10**8}
    slow = speed.effective_flops(w, 0.0, "x86")
    fast = speed.effective_flops({"Q5_K": 10**8}, 0.0, "x86")
    assert slow / fast == pytest.approx(kernels.factors("x86", "Q5_K")[1] / kernels.factors("x86", "Q5_1")[1])
    assert speed.effective_flops(w, 0.0, None) == 2 * 10**8


def test_a_calibration_from_busy_bench_results_says_so(tmp_path):
    import json

    from edgeq.planning.calibrate import from_bench

    run = {"model": "m", "path": "/nowhere/m-Q6_K.gguf", "backend": "llama.cpp", "variant": "Q6_K", "device": "cpu",
           "batch": 1, "prompt": "en", "n_prompt": 128, "n_gen": 64, "status": "ok", "tg_tps": {"median": 50.0},
           "calibration": {"bytes_by_type": {"Q6_K": 5 * 10**8}, "weights_by_type": {"Q6_K": 5 * 10**8},
                           "attention_flops": 0.0, "bytes_by_family": {"K": 5 * 10**8},
                           "matmul_weights": 5 * 10**8, "resident_bytes": 10**9, "flops_per_token": 10**9}}
    path = tmp_path / "bench.json"
    busy = "the machine was busy (Q6_K's generation speed spread 45% over its repetitions): speed differences ..."
    path.write_text(json.dumps({"schema": "edgeq-bench/1", "environment": {"cpu": "Test CPU"}, "settings": {},
                                "runs": [run], "roofline": {"bandwidth": {"read_gbps": 40.0}}, "busy": busy}))
    cal = from_bench(path, repack_types=[], kind="x86")
    assert any("busy" in w and "bench again" in w for w in cal.warnings)
    # Recorded per type, the bytes count at the type's kernel rate (Q6_K's on x86, relative to Q4_0's per byte).
    from edgeq.planning import kernels

    q6 = kernels.factors("x86", "Q6_K")[0]
    assert q6 != 1.0 and cal.tg_efficiency == pytest.approx(50.0 * 5e8 / q6 / 40e9, rel=0.02)


def test_tune_timings_that_spread_are_noise():
    from edgeq.tuning.speedcap import SPREAD_BUSY, _spread

    assert _spread([100.0, 110.0]) == pytest.approx(10 / 105) and _spread([100.0, 110.0]) < SPREAD_BUSY
    assert _spread([2.4, 12.7]) > SPREAD_BUSY  # the loaded run's Q4_K tg samples: the table is used instead
    assert _spread([5.0]) == 0.0


def test_tune_times_each_type_apart_from_the_stand_ins_its_file_holds():
    from edgeq.planning import kernels
    from edgeq.tuning.speedcap import TypeSpeed, per_unit

    # Truth, seconds per byte (tg) and per weight (pp): Q8_0 slow per weight, Q3_K fast.
    tg = {"Q8_0": 2e-9, "Q3_K": 1e-9}
    pp = {"Q8_0": 4e-9, "Q3_K": 1e-9}
    q8 = {"Q8_0": (1_000, 900)}
    q3 = {"Q3_K": (400, 1_000), "Q8_0": (700, 600)}  # Q3_K where it fits, Q8_0 stand-ins where it falls back

    def timed(mix: dict[str, tuple[int, int]]) -> TypeSpeed:
        return TypeSpeed(pp_s=sum(w * pp[t] for t, (_, w) in mix.items()),
                         tg_s=sum(b * tg[t] for t, (b, _) in mix.items()),
                         bytes=sum(b for b, _ in mix.values()), weights=sum(w for _, w in mix.values()), mix=mix)

    pp_rate, tg_rate = per_unit({"Q8_0": timed(q8), "Q3_K": timed(q3)}, "x86")
    assert tg_rate["Q3_K"] == pytest.approx(1e-9) and pp_rate["Q3_K"] == pytest.approx(1e-9)
    # Counted as all Q3_K (the file's time over its bytes), the stand-ins would make Q3_K look 2x slower.
    assert timed(q3).tg_s / timed(q3).bytes > 1.5 * tg_rate["Q3_K"]
    # A type no file holds (a stock recipe's Q6_K) runs at the timed ones' rates scaled by the kernel table.
    f = {t: kernels.factors("x86", t)[0] for t in ("Q8_0", "Q3_K", "Q6_K")}
    assert tg_rate["Q6_K"] == pytest.approx((2e-9 * f["Q8_0"] + 1e-9 * f["Q3_K"]) / 2 / f["Q6_K"])


def test_tune_verdict_says_when_its_speed_ratios_are_noise():
    from edgeq.tuning.verify import Row, verdict

    def rows(spread: float) -> list[Row]:
        return [Row("tuned", "t.gguf", 990, 4.8, 0.01, 1.0, 97.0, True, 0.011, 110.0, 30.0, 0.05),
                Row("Q4_K_M (imatrix)", "s.gguf", 1000, 4.9, 0.02, 2.0, 95.0, False, None, 100.0, 30.0, spread)]
    quiet, busy = verdict(rows(0.05)), verdict(rows(0.6))
    assert "1.10× its pp and 1.00× its tg" in quiet and "busy" not in quiet
    assert "a file's timing rounds spread 60% (a busy or drifting machine" in busy


def test_the_output_matrix_costs_generation_time_only_and_a_looked_up_embedding_none():
    """llama-bench's prompts (and a generation's) turn only the batch's last position into logits: a mixed file's
    output type must not count in its prompt speed (Qwen2.5-0.5B: 27% of its weights, the tied embedding)."""
    from edgeq.tuning.speedcap import tensor_time

    _, _, speeds = _tune_case()
    shape = [256, 1024]
    body = tensor_time(speeds)("blk.0.ffn_up.weight", shape, "Q8_0")
    assert body[0] > 0 and body[1] > 0
    assert tensor_time(speeds, tied=True)("token_embd.weight", shape, "Q8_0") == (0.0, body[1])
    assert tensor_time(speeds, tied=False)("output.weight", shape, "Q8_0") == (0.0, body[1])
    assert tensor_time(speeds, tied=False)("token_embd.weight", shape, "Q8_0") == (0.0, 0.0)
