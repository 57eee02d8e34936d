"""The allocation: one type per tensor, minimising predicted KLD, within a byte budget (a multiple-choice knapsack).

Solved by Lagrangian relaxation: for a price ``λ`` per byte each tensor independently takes the type minimising
``coefficient × error + λ × bytes``; a bisection on ``λ`` finds the cheapest price whose choice fits, and the bytes
left over then go, greedily, to the upgrades that buy the most predicted KLD per byte.  The result never exceeds
the budget: every step checks the padded size the written file will have.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..output import human_bytes
from ..planning import memory
from ..planning.devices import generic, headroom_bytes, named, parse_size
from ..planning.size import fallback_type, tensor_bytes
from ..planning.source import from_gguf
from ..quants import QUANT_TYPES
from ..sources.gguf_header import GGUFHeader, read_header
from .sensitivity import CANDIDATES, LOW_BIT, Calibration, TensorCost, ftype_for

# The types measured first: those at most this many bits per weight below the budget's average (and the probes').
# A type further down is measured only when the allocation asks for it (``lower_type``).
WINDOW_BITS = 2.0


@dataclass
class Allocation:
    types: dict[str, str]  # tensor -> ggml type
    tensor_bytes: int  # padded bytes of the allocated tensors
    predicted_kld: float


def padded(shape: list[int], ggml_type: str, alignment: int) -> int:
    b = tensor_bytes(shape, ggml_type)
    return -(-b // alignment) * alignment


Allowed = set[str] | dict[str, set[str]]  # one set for every tensor, or a set per tensor name


def allowed_types(got: dict[str, dict[str, str]], allowed: set[str]) -> dict[str, set[str]]:
    """Per tensor, the types it may take, from ``got`` ({kind: {tensor: the type its --pure file gave it}}).

    A tensor whose rows fit no block of a kind gets llama-quantize's fallback (Q5_K → Q5_1 on rows of 576,
    say).  ``allowed`` names the types the file may hold, so such a fallback stays only where no allowed type
    fits the tensor at all (then it is what llama-quantize writes whatever one asks)."""
    out: dict[str, set[str]] = {}
    for types in got.values():
        for name, t in types.items():
            out.setdefault(name, set()).add(t)
    return {n: (ts & allowed) or ts for n, ts in out.items()}


def _options(c: TensorCost, cal: Calibration, allowed: Allowed, alignment: int) -> list[tuple[int, float, str]]:
    """(bytes, predicted KLD, type), cheapest first, dominated options dropped."""
    coef = cal.coefficients[c.group]
    mine = allowed.get(c.name, set()) if isinstance(allowed, dict) else allowed
    opts = sorted((padded(c.shape, t, alignment), coef * e, t) for t, e in c.errors.items() if t in mine)
    if not opts:
        raise UsageError(f"no allowed type was measured for {c.name}.",
                         hint="Allow more --types (its rows may fit none of them).")
    kept: list[tuple[int, float, str]] = []
    for o in opts:  # more bytes must buy less error
        if not kept or o[1] < kept[-1][1]:
            if kept and o[0] == kept[-1][0]:
                kept[-1] = o
            else:
                kept.append(o)
    return kept


def smallest(costs: list[TensorCost], cal: Calibration, allowed: Allowed, alignment: int) -> int:
    """Padded bytes of the smallest recipe the candidates allow."""
    return sum(_options(c, cal, allowed, alignment)[0][0] for c in costs)


def largest(costs: list[TensorCost], cal: Calibration, allowed: Allowed, alignment: int) -> int:
    return sum(_options(c, cal, allowed, alignment)[-1][0] for c in costs)


def allocate(costs: list[TensorCost], cal: Calibration, budget: int, *, allowed: Allowed, alignment: int) -> Allocation:
    """The recipe of least predicted KLD whose tensors take at most ``budget`` padded bytes (the smallest recipe
    when even that is over: the caller refuses such budgets first)."""
    opts = {c.name: _options(c, cal, allowed, alignment) for c in costs}

    def choose(lam: float) -> dict[str, tuple[int, float, str]]:
        return {n: min(o, key=lambda x: (x[1] + lam * x[0], x[0])) for n, o in opts.items()}

    def total(ch: dict[str, tuple[int, float, str]]) -> int:
        return sum(x[0] for x in ch.values())

    lo, hi = 0.0, 1.0
    while total(choose(hi)) > budget and hi < 1e30:
        hi *= 10
    pick = choose(hi)
    if total(pick) > budget:
        pick = {n: o[0] for n, o in opts.items()}  # the smallest of all; the caller refuses if even it is over
    for _ in range(80):
        mid = (lo + hi) / 2
        ch = choose(mid)
        if total(ch) <= budget:
            hi, pick = mid, ch
        else:
            lo = mid
    # Spend what is left: the upgrade with the best KLD saved per byte that still fits, until none does.
    used = total(pick)
    while True:
        best = None
        for n, cur in pick.items():
            for o in opts[n]:
                extra = o[0] - cur[0]
                if extra > 0 and used + extra <= budget and o[1] < cur[1]:
                    gain = (cur[1] - o[1]) / extra
                    if best is None or gain > best[0]:
                        best = (gain, n, o, extra)
        if best is None:
            break
        _, n, o, extra = best
        pick[n], used = o, used + extra
    return Allocation({n: x[2] for n, x in pick.items()}, used,
                      cal.coefficients.get("floor", 0.0) + sum(x[1] for x in pick.values()))


def check_budget(size: str | int | None, bpw: float | None, ram: str | None, device: str | None,
                 max_kld: float | None) -> None:
    """Refuse a malformed budget before any stage runs (the same parsers ``budget_bytes`` uses)."""
    if isinstance(size, str):
        parse_size(size)
    if isinstance(size, int) and size <= 0:
        raise UsageError(f"a size budget of {size} bytes: expected more than zero.", hint="Example: --size 450MiB")
    if bpw is not None and not 1.0 <= bpw <= 16.0:
        raise UsageError(f"--bpw {bpw}: expected bits per weight between 1 and 16.", hint="Example: --bpw 4.8")
    if ram is not None:
        parse_size(ram)
    if device is not None:
        named(device)
    if max_kld is not None and not max_kld > 0:
        raise UsageError(f"--max-kld {max_kld}: expected a KLD above 0.", hint="Example: --max-kld 0.02")


def min_bits(allowed: set[str]) -> tuple[float, str]:
    """The fewest bits per weight any allowed type stores, and that type."""
    t = min(allowed, key=bits)
    return bits(t), t


def floor_bytes(header: GGUFHeader, allowed: set[str]) -> int:
    """Fewer bytes than any file tune could make of the float GGUF ``header`` with ``allowed`` types: each
    matrix at its smallest allowed type (or the fallback llama-quantize writes for its rows), each vector at
    F32 as llama-quantize keeps them.  Known from the header alone, so a budget below it is refused before
    the importance matrix and every per-type file are made (``smallest`` then gives the exact floor)."""
    total = max(0, header.data_offset_bytes - header.alignment)  # the quantized file's header is no smaller
    for t in header.tensors:
        if len(t.shape) < 2:
            total += padded(t.shape, "F32", header.alignment)
        else:
            total += min(padded(t.shape, fallback_type(a, t.shape[0]), header.alignment) for a in allowed)
    return total


def check_floor(limit: int, floor: int, allowed: set[str], *, about: str = "") -> None:
    if limit < floor:
        t = min_bits(allowed)[1]
        raise UsageError(f"a {human_bytes(limit)} file is below the smallest this model can be with these types: "
                         f"at least {human_bytes(floor)}{about}, every weight at {t}.",
                         hint=f"Ask for more than {human_bytes(floor)}, or allow smaller --types.")


def budget_bytes(size: str | int | None, bpw: float | None, ram: str | None, ctx: int, device: str | None,
                  max_kld: float | None, n_params: int, f16: Path) -> tuple[int, str, object]:
    if size is not None:
        return (size if isinstance(size, int) else parse_size(size)), "size", size
    if bpw is not None:  # in range: check_budget saw it
        header = read_header(f16)
        return int(header.data_offset_bytes + bpw * n_params / 8), "bpw", bpw
    if max_kld is not None:
        return 0, "max-kld", max_kld
    spec = from_gguf(f16)
    dev = named(device) if device else generic(parse_size(str(ram)), 50.0)  # the bandwidth plays no part here
    avail = dev.usable_ram_bytes - headroom_bytes(dev, None)
    rest = memory.estimate(spec, 0, ctx=ctx).total_bytes  # everything but the weights
    if avail - rest <= 0:
        raise UsageError(f"{dev.name} has {human_bytes(avail)} for edgeq's model, and the context alone takes {human_bytes(rest)}.",
                         hint="Use a smaller --ctx or a bigger device.")
    return avail - rest, "device" if device else "ram", device or ram


def for_kld(costs: list[TensorCost], cal: Calibration, target: float, allowed: Allowed, alignment: int,
             lo: int, hi: int) -> Allocation:
    """The smallest allocation whose predicted KLD meets ``target`` (bisection on the byte budget)."""
    best = allocate(costs, cal, hi, allowed=allowed, alignment=alignment)
    if best.predicted_kld > target:
        raise UsageError(f"no file meets --max-kld {target}: the best these types reach is {best.predicted_kld:.4g} "
                         f"(predicted).", hint=f"Ask for --max-kld {best.predicted_kld * 1.1:.3g} or more, or allow wider types.")
    while hi - lo > max(4096, hi // 1000):
        mid = (lo + hi) // 2
        a = allocate(costs, cal, mid, allowed=allowed, alignment=alignment)
        if a.predicted_kld <= target:
            hi, best = mid, a
        else:
            lo = mid
    return best


def bits(ggml_type: str) -> float:
    return QUANT_TYPES[ftype_for(ggml_type)].bits_per_weight


def _order(t: str) -> tuple[float, int]:
    """Narrow to wide, ties in the candidates' order: the same inputs always measure the same types."""
    return bits(t), -CANDIDATES.index(t) if t in CANDIDATES else 0


def first_types(allowed: set[str], budget_bpw: float | None, always: set[str]) -> set[str]:
    """The candidate types measured first: every allowed type no more than ``WINDOW_BITS`` below the budget's
    bits per weight (capped at the widest allowed type's, so a generous budget still gets the widest), and
    ``always`` (the probes); all of them for a KLD target, which has no size to start from.

    Measuring a type costs a quantization of the whole model and an error pass (up to 80 s each on a 0.5B
    model), and at a Q4_K_M-sized budget the 2- and 3-bit types were never chosen."""
    if budget_bpw is None or not allowed:
        return set(allowed)
    floor = min(budget_bpw, max(bits(t) for t in allowed)) - WINDOW_BITS
    return {t for t in allowed if bits(t) >= floor} | (always & allowed)


def lower_type(costs: list[TensorCost], allowed_for: Allowed, alignment: int, allowed: set[str], made: set[str],
               chosen: dict[str, str] | None) -> str | None:
    """The widest type not yet measured that would give some tensor an option between the one it was given
    (in ``chosen``; its cheapest measured one when ``chosen`` is None: the budget is below the smallest measured
    recipe) and the next cheaper measured one, or below its cheapest.  None when no tensor has such a gap, so
    the allocation stands.

    Why this finds what measuring every type would: for one tensor, error falls ever more slowly as bytes grow
    (each bit about halves it), so at any price per byte a tensor that did not take the next cheaper measured
    option would not take anything cheaper still.  (A type of exactly the size of a measured one, IQ3_S beside
    Q3_K, is not tried.)"""
    unmade = sorted((t for t in allowed if t not in made), key=_order, reverse=True)
    if not unmade:
        return None
    want: set[str] = set()
    for c in costs:
        mine = allowed_for.get(c.name, set()) if isinstance(allowed_for, dict) else allowed_for
        sizes = sorted({padded(c.shape, t, alignment) for t in c.errors if t in mine})
        if not sizes:
            continue
        top = padded(c.shape, chosen[c.name], alignment) if chosen and c.name in chosen else sizes[0]
        below = max((b for b in sizes if b < top), default=0)
        for u in unmade:
            if u in LOW_BIT and c.name == "token_embd.weight":
                continue  # such files keep it at Q8_0 (pertype)
            if below < padded(c.shape, fallback_type(u, c.shape[0]), alignment) < top:
                want.add(u)
                break
    return max(want, key=_order) if want else None
