"""The probes that turn error into KLD: files quantized one tensor group at a time, their KLD measured.

A file with every tensor at one type moves all groups together, and a fit on such files cannot tell the
embedding's share of the KLD from the feed-forward's (on the embedded model it put nearly all of it on the
embedding, and the allocation it drove was no better than stock).  So each probe quantizes one group
(embeddings and output, attention, or feed-forward) to a probe type and keeps the rest at Q8_0; with a pure
Q8_0 file for the floor, each group's coefficient is measured on its own.  One probe type is enough where the
errors are Fisher-weighted (they are the KLD to second order already, and the fit only corrects that): on the
embedded model, fits on one, two or three probe types predicted the stock Q3_K_M, Q4_K_M and Q5_K_M files and
a tuned one within 4% of each other, and each probe of a 0.5B model costs a pass over 2,048 tokens (15-20 s
here).  The importance matrix alone is further from the KLD, so it gets three, spread over the allowed types by
bits.  A probe's file is spliced from the per-type files' tensors (``pertype.splice``), not quantized again;
its KLD on the calibration text is cached by its recipe, and the file deleted once measured.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..files import write_json_atomic
from ..quants import QUANT_TYPES
from ..system import default_threads
from .pertype import WIDE, holders, splice, types_of  # WIDE: what the other groups keep in a probe
from .sensitivity import (
    GROUPS,
    Calibration,
    TensorCost,
    fit,
    ftype_for,
    load_json,
    recipe_errors,
)

PROBE_TOKENS = 2048  # of the calibration text, per probe (1020 scored positions: KLD to a few per cent)
PROBE_TYPES = ("Q3_K", "Q4_0", "Q4_K", "IQ4_NL", "Q5_0", "Q5_K", "Q6_K")  # tried in this order of preference
PROBE_TYPES_BY_WEIGHTING = {"fisher": 1, "imatrix": 3}


def probe_types(allowed: set[str], weighting: str = "fisher") -> list[str]:
    """The allowed types, narrow to wide, to probe with (one for Fisher-weighted errors, three for the importance
    matrix): the preferred ones, else the allowed ones by bits (a fit needs probes that move each group; Q8_0
    alone moves none of them)."""
    mine = [t for t in PROBE_TYPES if t in allowed] or sorted(
        (t for t in allowed if t != WIDE), key=lambda t: QUANT_TYPES[ftype_for(t)].bits_per_weight)
    if PROBE_TYPES_BY_WEIGHTING[weighting] == 1:
        return mine[:1]
    if len(mine) > 3:  # spread: the narrowest, the widest, one between
        mine = [mine[0], mine[len(mine) // 2], mine[-1]]
    return mine


def recipes(costs: list[TensorCost], per_type: dict[str, Path], kinds: list[str]) -> dict[str, dict[str, str]]:
    """{probe name: {tensor: type}}: per kind and group, that group at the kind (as its per-type file has it,
    fallbacks included) and the rest at Q8_0; plus pure Q8_0."""
    wide = types_of(per_type[WIDE])
    out = {WIDE: {c.name: wide[c.name] for c in costs}}
    for kind in kinds:
        got = types_of(per_type[kind])
        for g in GROUPS:
            out[f"{kind}:{g}"] = {c.name: got[c.name] if c.group == g else wide[c.name] for c in costs}
    return out


def calibrate(f16: Path, per_type: dict[str, Path], costs: list[TensorCost], calib: Path, work: Path,
              allowed: set[str], weighting: str, threads: int | None, progress: bool,
              device: str = "cpu") -> Calibration:
    """Measure the probes not yet measured (cached by recipe), then fit KLD to error."""
    from ..quality import perplexity  # here: the quality package loads numpy, which `edgeq --help` must not
    from ..quality.models import gguf_ref

    plans = recipes(costs, per_type, probe_types(allowed, weighting))
    cache_path = work / f"probes-{PROBE_TOKENS}.json"
    cached: dict[str, float] = load_json(cache_path) or {}
    keys = {name: hashlib.sha256(repr(sorted(r.items())).encode()).hexdigest()[:16] for name, r in plans.items()}
    todo = [n for n in plans if keys[n] not in cached]
    if todo:
        # Spliced from the per-type files' tensors (``splice``), not quantized again; pure Q8_0 is its own file.
        index = holders(per_type)
        spliced = {n: work / f"probe-{keys[n]}.gguf" for n in todo if n != WIDE}
        try:
            for n, path in spliced.items():
                splice(per_type[WIDE], {t: index[t, ty] for t, ty in plans[n].items()}, path)
            ref = gguf_ref(f16)
            res = perplexity([ref, *[gguf_ref(spliced.get(n, per_type[WIDE])) for n in todo]],
                             calib.read_text(encoding="utf-8"), str(calib), reference=ref, ctx=512,
                             max_tokens=PROBE_TOKENS, threads=threads or default_threads(), progress=progress,
                             device=device)
        finally:
            for path in spliced.values():
                path.unlink(missing_ok=True)
        for n, r in zip(todo, res.rows[1:]):
            cached[keys[n]] = float(r.kld_mean) if r.kld_mean is not None else 0.0
        write_json_atomic(cache_path, cached)
    measured = {n: cached[keys[n]] for n in plans}
    return fit({n: recipe_errors(costs, r) for n, r in plans.items()}, measured)

