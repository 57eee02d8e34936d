"""Does quantization make this CPU much faster? Speed-ups, the verdict sentences, the roofline."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .results import RunResult, Verdict

# "Much faster": generation at least this many times the full-precision speed.
HOLDS_AT = 1.5
# A bandwidth reading this much below another in the same run is reported as drift.
DRIFT_WARN = 0.20
FULL_PRECISION_GGUF = ("F32", "F16", "BF16")
BASELINES = {  # name -> (backend, variant)
    "F32 GGUF": ("llama.cpp", "F32"),
    "F16 GGUF": ("llama.cpp", "F16"),
    "transformers fp32": ("transformers", "fp32"),
}


def _key(r: RunResult) -> tuple[str, int, str]:
    return (r.model, r.batch, r.prompt)


def _ratios(r: RunResult, b: RunResult) -> dict[str, float]:
    assert r.pp_tps and r.tg_tps and b.pp_tps and b.tg_tps
    out = {"pp": round(r.pp_tps.median / b.pp_tps.median, 3), "tg": round(r.tg_tps.median / b.tg_tps.median, 3)}
    if r.peak_rss_bytes and b.peak_rss_bytes:
        out["memory"] = round(r.peak_rss_bytes / b.peak_rss_bytes, 3)
    return out


def verdicts(runs: list[RunResult]) -> list[Verdict]:
    """One verdict per quantized run (GGUF quants and bitsandbytes) against the full-precision ones."""
    ok = [r for r in runs if r.status == "ok" and r.device in ("cpu", "metal")]
    base = {(name, _key(r)): r for r in ok for name, (be, var) in BASELINES.items()
            if (r.backend, r.variant) == (be, var)}
    out = []
    for r in ok:
        quantized = (r.backend == "llama.cpp" and r.variant not in FULL_PRECISION_GGUF) or r.variant.startswith("bnb")
        if not quantized:
            continue
        v = Verdict(r.variant, r.batch, r.prompt)
        for name in BASELINES:
            b = base.get((name, _key(r)))
            if b is not None:
                v.vs[name] = _ratios(r, b)
        # GGUF quants are judged against the F32 GGUF, bitsandbytes against transformers fp32.
        ref = "F32 GGUF" if r.backend == "llama.cpp" and "F32 GGUF" in v.vs else "transformers fp32"
        if ref in v.vs:
            v.reference = ref
            v.holds = v.vs[ref]["tg"] >= HOLDS_AT
            v.sentence = _sentence(r, v, ref, base)
        else:
            v.sentence = f"{r.variant}: no full-precision run to compare with (add F32 or an HF checkpoint)."
        out.append(v)
    return out


def _sentence(r: RunResult, v: Verdict, ref: str, base: dict) -> str:
    b = base[(ref, _key(r))]
    assert r.tg_tps and b.tg_tps  # verdicts are made of finished runs only
    tg, pp = v.vs[ref]["tg"], v.vs[ref]["pp"]
    head = (f"{r.backend} {r.variant} (batch {r.batch}, {r.prompt}): hypothesis "
            f"{'HOLDS' if v.holds else 'does NOT hold'} for generation: {tg:.2f}× {ref} "
            f"({r.tg_tps.median:.1f} vs {b.tg_tps.median:.1f} tok/s)")
    others = [f"{vs['tg']:.2f}× {n}" for n, vs in v.vs.items() if n != ref]
    pp_word = "faster" if pp >= 1.05 else "slower" if pp <= 0.95 else "about the same"
    mem = v.vs[ref].get("memory")
    tail = f"; prompt processing {pp:.2f}× ({pp_word})" + (f"; peak RAM {mem:.2f}×" if mem else "")
    return head + (f", {', '.join(others)}" if others else "") + tail + "."


def roofline(runs: list[RunResult], readings: Sequence[dict[str, Any] | None], *,
             threads: int | None = None) -> dict[str, Any]:
    """Each generation speed as a fraction of bandwidth ÷ bytes of weights read per step.

    ``readings`` are edgeq-bandwidth's results, taken at the start and the end of the
    matrix; the ceiling is the best of them.  A run that reads faster than the ceiling
    proves the ceiling wrong, and a reading that moved more than ``DRIFT_WARN`` within
    the run says the machine drifted: both are warned of, never hidden.
    """
    got = [r for r in readings if r and r.get("read_gbps")]
    if not got:
        return {"rows": [], "warnings": [], "note": "edgeq-bandwidth is not built; no roofline."}
    best = max(got, key=lambda r: float(r["read_gbps"]))
    gbps = [float(r["read_gbps"]) for r in got]
    spread = round(1 - min(gbps) / max(gbps), 3)
    bandwidth = {**best, "readings_gbps": gbps, "spread": spread}
    warnings = []
    ran = int(best.get("threads_ran") or best.get("threads") or 0)  # threads_ran: every pass's fewest readers
    if threads and ran and ran != threads:
        warnings.append(f"edgeq-bandwidth read with {ran} thread(s) and the runs used {threads} (an old build? "
                        "`make setup` rebuilds it): the ceiling is not what those runs could reach.")
    if spread > DRIFT_WARN:
        warnings.append(f"the read bandwidth moved {spread:.0%} within this run ({' → '.join(f'{g:g}' for g in gbps)}"
                        " GB/s): the machine's speed drifted, so its figures carry that much doubt.")
    bps = best["read_gbps"] * 1e9
    rows = []
    for r in runs:
        if r.status != "ok" or not r.weight_bytes or not r.tg_tps or r.device != "cpu":
            continue
        limit_steps = bps / r.weight_bytes  # decode steps per second if only weights had to be read
        steps = r.tg_tps.median / r.batch
        fraction = round(steps / limit_steps, 3)
        rows.append({"backend": r.backend, "variant": r.variant, "batch": r.batch, "prompt": r.prompt,
                     "weight_bytes": r.weight_bytes, "roofline_tps": round(limit_steps * r.batch, 2),
                     "read_gbps": round(steps * r.weight_bytes / 1e9, 2), "fraction": fraction})
        if fraction > 1:
            warnings.append(f"{r.backend} {r.variant} batch {r.batch} ({r.prompt}) read {rows[-1]['read_gbps']} GB/s, "
                            f"above the measured {best['read_gbps']} GB/s: the bandwidth ceiling is wrong, "
                            "so no roofline fraction here can be trusted.")
    return {"bandwidth": bandwidth, "rows": rows, "warnings": warnings,
            "note": "fraction = measured decode steps/s ÷ (read bandwidth ÷ weight bytes read per step)"}
