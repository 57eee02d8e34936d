"""Pick the quant (or, with --largest, the model and quant) to ship by a named objective (``objective``), and say
why in one sentence that names the trade."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import UsageError
from .objective import DEFAULT_PREFER, NEAR_LOSSLESS_KLD, PREFERENCES, Choice, band, choose, within_bound

GIB = 1024**3


@dataclass
class Candidate:
    model: str
    quant: str
    parameters: int
    total_bytes: int  # predicted RAM that must fit
    budget_bytes: int  # usable RAM minus headroom
    tg_tps: float
    kld: float | None
    pp_tps: float | None = None
    tg_low: float | None = None  # measured min–max over repetitions; None: a prediction (objective.band)
    tg_high: float | None = None
    pp_low: float | None = None
    pp_high: float | None = None

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.budget_bytes

    @property
    def tg_range(self) -> tuple[float, float]:
        return band(self.tg_tps, self.tg_low, self.tg_high)

    @property
    def pp(self) -> float | None:
        return self.pp_tps

    @property
    def pp_range(self) -> tuple[float, float] | None:
        return band(self.pp_tps, self.pp_low, self.pp_high) if self.pp_tps else None


@dataclass
class Recommendation:
    ok: bool
    model: str | None
    quant: str | None
    sentence: str
    closest_model: str | None = None
    closest_quant: str | None = None
    prefer: str = DEFAULT_PREFER
    kld_bound: float | None = None  # the quality bound the speed and size objectives kept to
    within_noise: list[str] | None = None  # candidates equal to the pick within noise on the first criterion


def check_prefer(prefer: str) -> None:
    if prefer not in PREFERENCES:
        raise UsageError(f"--prefer {prefer}: expected one of {', '.join(PREFERENCES)}.",
                         hint="speed (the default) picks the fastest near-lossless file; quality the least KLD.")


def check_asks(min_tps: float | None, max_kld: float | None) -> None:
    """Refuse asks no candidate could meet, before anything is planned or made: a speed or a KLD that is not a
    finite number above zero."""
    if min_tps is not None and not (math.isfinite(min_tps) and min_tps > 0):
        raise UsageError(f"--min-tps {min_tps:g}: expected a speed above 0 tokens per second.",
                         hint="Example: --min-tps 10; leave it out to ask for no speed.")
    if max_kld is not None and not (math.isfinite(max_kld) and max_kld > 0):
        raise UsageError(f"--max-kld {max_kld:g}: expected a KLD above 0 (0 is met by no quantized file).",
                         hint="Example: --max-kld 0.02; leave it out to ask for no quality bound.")


def misses(c: Candidate, min_tps: float | None, max_kld: float | None) -> list[str]:
    """Why ``c`` does not qualify, one phrase per unmet requirement."""
    out = []
    if not c.fits:
        out.append(f"needs {c.total_bytes / GIB:.2f} GiB of {c.budget_bytes / GIB:.2f} GiB")
    if min_tps is not None and c.tg_tps < min_tps:
        out.append(f"{c.tg_tps:.1f} tok/s < {min_tps:g}")
    if max_kld is not None and (c.kld is None or c.kld > max_kld):
        out.append("KLD unknown" if c.kld is None else f"KLD {c.kld:.3f} > {max_kld:g}")
    return out


def _shortfall(c: Candidate, min_tps: float | None, max_kld: float | None) -> float:
    """How far from qualifying, as a sum of log ratios (0 = qualifies)."""
    s = max(0.0, math.log(c.total_bytes / max(1, c.budget_bytes)))
    if min_tps:
        s += max(0.0, math.log(min_tps / max(c.tg_tps, 1e-9)))
    if max_kld:
        s += max(0.0, math.log((c.kld if c.kld is not None else 1.0) / max_kld))
    return s


def _quality_key(c: Candidate) -> tuple[float, float]:
    # Lower KLD is better; unknown KLD ranks by bits (more bytes per parameter, less loss).
    return (c.kld if c.kld is not None else math.inf, -c.total_bytes / max(1, c.parameters))


def recommend(cands: list[Candidate], *, min_tps: float | None = None, max_kld: float | None = None,
              largest: bool = False, prefer: str = DEFAULT_PREFER) -> Recommendation:
    """The pick by ``prefer`` among those that fit and meet the asks (largest model first with ``largest``)."""
    check_prefer(prefer)
    if not cands:
        return Recommendation(False, None, None, "nothing to choose from: no quant was planned.", prefer=prefer)
    good = [c for c in cands if not misses(c, min_tps, max_kld)]
    if not good:
        near = min(cands, key=lambda c: (_shortfall(c, min_tps, max_kld), _quality_key(c)))
        what = f"{near.model} {near.quant}" if largest else near.quant
        return Recommendation(False, None, None, f"nothing qualifies; the closest is {what} "
                              f"({', '.join(misses(near, min_tps, max_kld))}).", near.model, near.quant, prefer=prefer)
    pool = good
    if largest:
        top = max(c.parameters for c in good)
        pool = [c for c in good if c.parameters == top]
    bound = max_kld if max_kld is not None else NEAR_LOSSLESS_KLD
    kept = within_bound(pool, bound) if prefer != "quality" else pool
    rule = prefer if kept else "quality"  # nothing near-lossless qualifies: the least loss is the fair pick
    ch = choose(kept or pool, rule)
    best = ch.best
    assert isinstance(best, Candidate)
    asks = [f"fits in {best.budget_bytes / GIB:.2f} GiB (needs {best.total_bytes / GIB:.2f} GiB)"]
    if min_tps is not None:
        asks.append(f"runs at ~{best.tg_tps:.0f} tok/s (≥ {min_tps:g} asked)")
    what = f"{best.model} {best.quant}" if largest else best.quant
    lead = {"speed": f"the fastest ({best.tg_tps:.1f} tok/s) within KLD {bound:g}",
            "size": f"the smallest within KLD {bound:g}", "quality": "the best quality"}[rule]
    if rule == "quality" and prefer != "quality":
        lead = f"none within KLD {bound:g} qualifies, so the best quality"
    if largest:
        lead = (f"the largest model; {lead.replace('none within', 'none of its quants within')}"
                if lead.startswith("none") else f"the largest model and {lead.removeprefix('the ')}")
    sentence = f"{what}: {lead} ({_kld_text(best.kld)}) that {' and '.join(asks)}{_noise(ch)}{_trade(best, pool)}."
    return Recommendation(True, best.model, best.quant, sentence, prefer=prefer,
                          kld_bound=bound if rule != "quality" else None, within_noise=ch.ties or None)


def _kld_text(kld: float | None) -> str:
    return f"KLD {kld:.4f}" if kld is not None else "quality unknown"


def _noise(ch: Choice) -> str:
    if not ch.ties:
        return ""
    how = "ties with it on" if ch.tied_on in ("KLD", "RAM") else "is within noise of it on"
    if len(ch.ties) > 1:
        how = how.replace("ties", "tie").replace("is within", "are within")
    return f"; {', '.join(ch.ties)} {how} {ch.tied_on}, so {ch.decided_by or 'the order'} decided"


def _trade(best: Candidate, pool: list[Candidate]) -> str:
    """The trade the pick makes, against the best quality that also qualifies (when that is another file)."""
    q = min(pool, key=_quality_key)
    if q is best or q.kld is None or best.kld is None:
        return ""
    speed = best.tg_tps / q.tg_tps if q.tg_tps else math.inf
    slower = (1 - q.tg_tps / best.tg_tps) * 100 if best.tg_tps else 0.0
    verb = f"run {slower:.0f}% slower" if slower > 0 else f"run {-slower:.0f}% faster"
    return (f"; {speed:.2f}× {q.quant}'s speed, and {q.quant} would have KLD {q.kld:.4f} "
            f"({best.kld - q.kld:+.4f} for the pick) and {verb}")
