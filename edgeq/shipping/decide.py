"""ship's plan and pick: every candidate planned for the target, and the pick by a named objective.

Speeds measured here carry their repetitions' min–max, so two candidates whose ranges overlap are equal and the
next criterion decides (``plan.objective``); speeds predicted for another device carry the plan's band.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..output import to_jsonable
from ..planning import plan
from ..planning.objective import DEFAULT_PREFER, dominated_by
from ..planning.recommend import Candidate, Recommendation, recommend
from ..planning.source import from_gguf
from ..reporting.tables import first_prompt_batch1
from .result import Option

GENERIC_BANDWIDTH_GBPS = 50.0  # a --ram machine's, without --bandwidth (a laptop's dual-channel DDR4/5)


def _stat(run: dict[str, Any] | None, key: str) -> tuple[float | None, float | None, float | None]:
    s = (run or {}).get(key) or {}
    return (float(s["median"]), float(s["min"]), float(s["max"])) if s.get("median") else (None, None, None)


def plan_options(cands: dict[str, Path], eval_path: Path, bench_path: Path, target: str | None,
                 ram_bytes: int | None, bandwidth_gbps: float | None, ctx: int,
                 here: bool) -> tuple[list[Option], list[dict[str, Any]]]:
    """Each candidate planned for the target (calibrated by the bench when the target is this machine)."""
    bench = json.loads(bench_path.read_text())
    ev = json.loads(eval_path.read_text())
    # The runs the card shows too: the first prompt at batch 1 (bench measures each prompt).
    runs = {Path(r["path"]).name: r for r in first_prompt_batch1(bench["runs"]) if r["backend"] == "llama.cpp"}
    rows = {Path(r["model"]["path"]).name: r for r in ev["rows"]}
    options, plans = [], []
    for label, path in cands.items():
        spec = from_gguf(path)
        quants = [] if spec.recipes else list(spec.files)
        # A --ram machine gets _target's bandwidth too, never this machine's (nor its calibration).
        res = plan(str(path), quants=quants, ctx=ctx, device=target, ram_bytes=ram_bytes,
                   bandwidth_gbps=bandwidth_gbps or (GENERIC_BANDWIDTH_GBPS if ram_bytes is not None else None),
                   calibrate=str(bench_path) if here else None, fit_params=False)
        row = res.rows[0]
        plans.append(to_jsonable(res))
        run, q = runs.get(path.name), rows.get(path.name, {})
        tg, tg_lo, tg_hi = _stat(run, "tg_tps")
        pp, pp_lo, pp_hi = _stat(run, "pp_tps")
        measured = bool(here and tg)
        options.append(Option(label, str(path), path.stat().st_size, row.bits_per_weight, q.get("kld_mean"),
                              q.get("delta_ppl_pct"), q.get("top1_pct"), tg, pp,
                              run.get("peak_rss_bytes") if run else None, row.memory.required_bytes,
                              tg if measured and tg else row.tg_tps, measured, row.fits,
                              tg_low_target=tg_lo if measured else None, tg_high_target=tg_hi if measured else None,
                              pp_tps_target=pp if measured else row.pp_tps,
                              pp_low_target=pp_lo if measured else None, pp_high_target=pp_hi if measured else None))
    return options, plans


def _candidates(options: list[Option], budget: int) -> list[Candidate]:
    # The F16 reference competes too: its KLD is 0 by definition (it is what the others are measured against).
    return [Candidate("", o.label, 1, o.ram_target_bytes, budget, o.tg_tps_target,
                      0.0 if o.label == "F16" else o.kld_mean, o.pp_tps_target, o.tg_low_target, o.tg_high_target,
                      o.pp_low_target, o.pp_high_target) for o in options]


def pick(options: list[Option], *, device_budget: int, min_tps: float | None, max_kld: float | None,
         prefer: str = DEFAULT_PREFER) -> tuple[Recommendation, Recommendation | None]:
    """The pick by ``prefer`` among the candidates that fit and meet the asks, and the runner-up (the pick of the
    rest); each option is marked with a candidate that dominates it, if one does."""
    cands = _candidates(options, device_budget)
    dom = dominated_by(cands)
    for o in options:
        o.dominated_by = dom[o.label]
    best = recommend(cands, min_tps=min_tps, max_kld=max_kld, prefer=prefer)
    if best.quant == "F16":
        best.sentence = best.sentence.replace(f"(KLD {0.0:.4f})", "(the float reference itself)")
    if not best.ok:
        return best, None
    rest = [c for c in cands if c.quant != best.quant]
    return best, (recommend(rest, min_tps=min_tps, max_kld=max_kld, prefer=prefer) if rest else None)
