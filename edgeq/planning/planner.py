"""`edgeq plan`: size, peak RAM, speed and quality of each quant on a machine, and which to ship."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..quants import parse_quants
from . import devices, families, fitcheck, kernels, memory, quality, source, speed
from .calibrate import MIN_SIZE_SPREAD, Calibration, from_bench
from .devices import Device
from .objective import DEFAULT_PREFER, dominated_by
from .recommend import Candidate, Recommendation, check_asks, check_prefer, recommend
from .size import predict_size, tensor_bytes, tensor_types
from .vision import VisionPlan, vision_plan

SCHEMA = "edgeq-plan/1"
DEFAULT_QUANTS = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0")
DEFAULT_CTX = 4096
DEFAULT_CALIBRATION = "edgeq-bench.json"  # bench's default output, used when it was measured here


@dataclass
class QuantPlan:
    model: str
    quant: str
    parameters: int
    file_size_bytes: int  # predicted
    file_size_measured_bytes: int | None  # the GGUF's real size, when the source has it
    bits_per_weight: float
    fallback_share: float  # of parameters in legacy types where a K-type was asked
    type_shares: dict[str, float]
    memory: memory.MemoryEstimate
    tg_tps: float  # predicted
    tg_bound: str  # "memory" (uncalibrated roofline) or the kernel family taking most of a token's time
    pp_tps: float | None  # predicted
    quality: quality.Quality
    fits: bool
    reason: str  # why it fits or not, one phrase
    dominated_by: str | None = None  # a quant with no more KLD that is faster beyond noise: off the Pareto front


@dataclass
class PlanResult:
    schema: str
    source: dict[str, object]
    device: Device
    ctx: int
    cache_type: str
    headroom_bytes: int
    budget_bytes: int
    calibration: Calibration | None
    rows: list[QuantPlan] = field(default_factory=list)
    recommendation: Recommendation | None = None
    fit_params: list[fitcheck.FitParams] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    vision: VisionPlan | None = None  # a vision-language model's projector, counted in every row's RAM


def _device(name: str | None, ram_bytes: int | None, bandwidth_gbps: float | None,
            calib: Calibration | None) -> Device:
    if name:
        d = devices.named(name)
    elif ram_bytes is not None and bandwidth_gbps is not None:
        d = devices.generic(ram_bytes, bandwidth_gbps)
    else:
        d = devices.this_machine(bandwidth_gbps=bandwidth_gbps or (calib.bandwidth_gbps if calib else None))
    return devices.override(d, ram_bytes=ram_bytes, bandwidth_gbps=bandwidth_gbps)


def _calibration(path: str | None, target_is_here: bool, repack: list[str], kind: str) -> Calibration | None:
    if path:
        return from_bench(Path(path), repack_types=repack, kind=kind)
    auto = Path(DEFAULT_CALIBRATION)
    if target_is_here and auto.is_file():
        try:
            return from_bench(auto, repack_types=repack, kind=kind)
        except UsageError:
            return None  # an unusable leftover file is not the user's question
    return None


def _row(spec: source.ModelSpec, quant: str, *, ctx: int, cache_type: str, device: Device, budget: int,
         calib: Calibration | None, eval_rows: list[dict[str, object]], vision: VisionPlan | None = None) -> QuantPlan:
    size = predict_size(spec, quant)
    types = tensor_types(spec, quant)
    sizes = [tensor_bytes(t.shape, ty) for t, ty in zip(spec.tensors, types)]
    repacked = sum(b for b, ty in zip(sizes, types) if ty in device.repack_types)
    measured = Path(spec.files[quant]).stat().st_size if quant in spec.files else None
    mem = memory.estimate(spec, measured or size.file_size_bytes, ctx=ctx, cache_type=cache_type,
                          repacked_bytes=repacked,
                          overhead_bytes=calib.overhead_bytes if calib else memory.DEFAULT_OVERHEAD_BYTES)
    if vision:  # the projector file is read whole at load, and an image's encoder graph allocated beside it
        mem.projector_bytes = vision.ram_bytes
        mem.total_bytes += vision.ram_bytes
        mem.required_bytes += vision.ram_bytes
    kind = kernels.kind_of(device.backend, device.repack_types)
    if calib:
        sp = speed.estimate(spec, types, sizes, bandwidth_gbps=device.bandwidth_gbps,
                            tg_efficiency=calib.tg_efficiency, family_efficiency=calib.tg_family_efficiency,
                            overhead_s=calib.tg_overhead_ms / 1e3, gflops=calib.pp_gflops,
                            pp_efficiency=1.0 if calib.pp_gflops else None, cache_type=cache_type, kind=kind)
    else:
        sp = speed.estimate(spec, types, sizes, bandwidth_gbps=device.bandwidth_gbps,
                            tg_efficiency=device.tg_efficiency, gflops=device.gflops,
                            pp_efficiency=device.pp_efficiency, cache_type=cache_type, kind=kind)
    names = {spec.name.lower(), Path(spec.source).name.lower(), Path(spec.source).stem.lower()}
    q = quality.expected(quant, names, eval_rows)
    fits = mem.required_bytes <= budget
    gib = 1024**3
    reason = (f"{(budget - mem.required_bytes) / gib:.2f} GiB to spare" if fits else
              f"needs {mem.required_bytes / gib:.2f} GiB, {budget / gib:.2f} GiB usable after headroom")
    return QuantPlan(spec.name, quant, size.parameters, size.file_size_bytes, measured, size.bits_per_weight,
                     size.fallback_share, size.type_shares, mem, sp.tg_tps, sp.tg_bound, sp.pp_tps, q, fits, reason)


def _check_args(ctx: int, cache_type: str, headroom_bytes: int | None) -> None:
    if ctx < 1:
        raise UsageError(f"--ctx must be at least 1 (got {ctx}).", hint="Pass the context length in tokens, e.g. 4096.")
    if cache_type not in memory.CACHE_TYPES:
        raise UsageError(f"unknown --cache-type {cache_type!r}.", hint=f"Use one of: {', '.join(memory.CACHE_TYPES)}.")
    if headroom_bytes is not None and headroom_bytes < 0:
        raise UsageError("--headroom cannot be negative.", hint="Pass a size like 1G, or 0.")


def _setup(device: str | None, ram_bytes: int | None, bandwidth_gbps: float | None, calibrate: str | None,
           headroom_bytes: int | None) -> tuple[Device, Calibration | None, int, int]:
    here = device is None and not (ram_bytes is not None and bandwidth_gbps is not None)
    probe = devices.named(device) if device else None
    repack = probe.repack_types if probe else (devices.local_repack_types() if here else [])
    backend = probe.backend if probe else ("metal" if here and devices.has_metal() else "cpu")
    calib = _calibration(calibrate, here, repack, kernels.kind_of(backend, repack))
    dev = _device(device, ram_bytes, bandwidth_gbps, calib)
    head = devices.headroom_bytes(dev, headroom_bytes)
    return dev, calib, head, dev.usable_ram_bytes - head


def plan(src: str | None, *, quants: list[str] | tuple[str, ...] = DEFAULT_QUANTS, ctx: int = DEFAULT_CTX,
         cache_type: str = "f16", device: str | None = None, ram_bytes: int | None = None,
         bandwidth_gbps: float | None = None, headroom_bytes: int | None = None, calibrate: str | None = None,
         min_tps: float | None = None, max_kld: float | None = None, eval_results: list[str] | None = None,
         rpc: list[str] | None = None, fit_params: bool = True, revision: str | None = None,
         token: str | None = None, prefer: str = DEFAULT_PREFER) -> PlanResult:
    """Plan every quant of ``src`` (GGUF, folder, HF checkpoint or repo id) for a machine, and recommend one by
    ``prefer`` (``objective``)."""
    _check_args(ctx, cache_type, headroom_bytes)
    check_asks(min_tps, max_kld)
    check_prefer(prefer)
    qs = [q.name for q in parse_quants(list(quants))]
    spec = source.load(src, revision=revision, token=token)
    qs += [label for label in spec.recipes if label not in qs]  # tuned files: their own rows
    dev, calib, head, budget = _setup(device, ram_bytes, bandwidth_gbps, calibrate, headroom_bytes)
    eval_rows = quality.load_eval([Path(p) for p in eval_results or []])
    vis = vision_plan(src) if spec.kind != "hub" else None  # a repo id: its vision tensors are not fetched
    rows = [_row(spec, q, ctx=ctx, cache_type=cache_type, device=dev, budget=budget, calib=calib, eval_rows=eval_rows,
                 vision=vis) for q in qs]
    res = PlanResult(SCHEMA, {"source": src, "kind": spec.kind, "name": spec.name, "architecture": spec.arch,
                              "parameters": spec.parameters, "n_layer": spec.n_layer, "ctx_train": spec.ctx_train},
                     dev, ctx, cache_type, head, budget, calib, rows)
    res.recommendation = _decide(rows, budget, min_tps=min_tps, max_kld=max_kld, prefer=prefer)
    if fit_params:
        res.fit_params = _fit_params(spec, rows, ctx=ctx, cache_type=cache_type, rpc=rpc)
    res.notes = _notes(spec, ctx, rows, calib) + _vision_notes(vis, ctx)
    res.vision = vis
    return res


def _vision_notes(vis: VisionPlan | None, ctx: int) -> list[str]:
    if vis is None:
        return []
    how = "measured" if vis.measured else "predicted at F16"
    line = (f"vision: every row's RAM counts the projector {vis.projector} ({vis.projector_bytes / 2**20:.1f} MiB, {how}) "
            f"and one image's encoder buffer ({vis.encoder_compute_bytes / 2**20:.1f} MiB)")
    if vis.image_tokens is None:
        return [line + f"; image tokens {vis.image_tokens_rule}."]
    line += f"; one image takes {vis.image_tokens} of the {ctx} context tokens ({vis.image_tokens_rule})"
    return [line + (": --ctx leaves no room for text after it." if vis.image_tokens >= ctx else ".")]


def _candidate(r: QuantPlan, budget: int) -> Candidate:
    return Candidate(r.model, r.quant, r.parameters, r.memory.required_bytes, budget, r.tg_tps, r.quality.kld,
                     r.pp_tps)


def _decide(rows: list[QuantPlan], budget: int, *, largest: bool = False, **asks: object) -> Recommendation:
    """The recommendation, and each row marked when another of its model dominates it."""
    cands = [_candidate(r, budget) for r in rows]
    for m in {r.model for r in rows}:
        mine = [(r, c) for r, c in zip(rows, cands) if r.model == m]
        dom = dominated_by([c for _, c in mine])
        for r, c in mine:
            r.dominated_by = dom[c.quant]
    return recommend(cands, largest=largest, **asks)  # type: ignore[arg-type]


def _fit_params(spec: source.ModelSpec, rows: list[QuantPlan], *, ctx: int, cache_type: str,
                rpc: list[str] | None) -> list[fitcheck.FitParams]:
    """llama-fit-params on the GGUFs the source already has (it needs a file; it reads no weights)."""
    out = []
    for r in rows:
        if r.quant in spec.files:
            lines = fitcheck.run(Path(spec.files[r.quant]), ctx, cache_type=cache_type, rpc=rpc)
            types = tensor_types(spec, r.quant)
            tb = sum(tensor_bytes(t.shape, ty) for t, ty in zip(spec.tensors, types))
            out += fitcheck.compare(spec, r.quant, lines, tensor_bytes=tb, kv_bytes=r.memory.kv_cache_bytes,
                                    compute_bytes=r.memory.compute_bytes)
    return out


def _notes(spec: source.ModelSpec, ctx: int, rows: list[QuantPlan], calib: Calibration | None) -> list[str]:
    notes = []
    if spec.ctx_train and ctx > spec.ctx_train:
        notes.append(f"--ctx {ctx} is beyond the {spec.ctx_train} tokens the model was trained for.")
    fb = [r for r in rows if r.fallback_share >= 0.01]
    if fb:
        notes.append(f"{', '.join(r.quant for r in fb)}: rows of {spec.n_embd} weights are not a multiple of 256, "
                     f"so llama.cpp falls back to legacy types for part of the model (bits/weight shows it).")
    rep = [r for r in rows if r.memory.repacked_bytes]
    if rep:
        notes.append(f"RAM is what must fit; peak RSS reads up to {max(r.memory.repacked_bytes for r in rep) / 2**20:.0f} "
                     f"MiB higher ({', '.join(sorted({r.quant for r in rep}))}): ggml repacks those tensors for the "
                     f"device's CPU and their file pages stay mapped, clean and reclaimable.")
    if calib:
        notes.append(f"speed and overhead calibrated from {calib.source} ({calib.runs} runs on {calib.machine}, "
                     f"{calib.date or 'undated'}).{_size_warning(spec, calib)}")
        back = [f"{s['run']} {s['tg_tps']:.1f} → {s['predicted_tg_tps']:.1f}" for s in calib.samples
                if "run" in s and "predicted_tg_tps" in s]
        if back:
            notes.append("calibration runs, measured tg tok/s → predicted back: " + "; ".join(back) + ".")
        notes += [f"calibration warning: {w}" for w in calib.warnings]
    else:
        notes.append("speeds are uncalibrated roofline predictions; pass --calibrate with `edgeq bench` results "
                     "measured on the target to fit them.")
    if any(not r.quality.measured for r in rows):
        notes.append(f"quality: {quality.PUBLISHED_SOURCE}; another model's figures, a guide to the ranking only.")
    return notes


def _size_warning(spec: source.ModelSpec, calib: Calibration) -> str:
    """A warning when tg is extrapolated across model sizes without a fitted per-token overhead."""
    w, seen = speed.matmul_weights(spec), calib.tg_model_weights
    if calib.tg_overhead_ms or not seen or min(seen) / MIN_SIZE_SPREAD <= w <= max(seen) * MIN_SIZE_SPREAD:
        return ""
    ratio = w / max(seen) if w > max(seen) else min(seen) / w
    return (f" Those runs used one model size, {ratio:.1f}× {'smaller' if w > max(seen) else 'larger'} than this one, "
            f"so the fixed cost per token could not be fitted and tg may be off by a third; bench a second model "
            f"size to fit it.")


def largest(*, family: str | None = None, quants: list[str] | tuple[str, ...] = DEFAULT_QUANTS,
            ctx: int = DEFAULT_CTX, cache_type: str = "f16", device: str | None = None, ram_bytes: int | None = None,
            bandwidth_gbps: float | None = None, headroom_bytes: int | None = None, calibrate: str | None = None,
            min_tps: float | None = None, max_kld: float | None = None, prefer: str = DEFAULT_PREFER) -> PlanResult:
    """The largest shipped model config (of ``family``, or any) and its best quant this machine runs as asked."""
    _check_args(ctx, cache_type, headroom_bytes)
    check_prefer(prefer)
    qs = [q.name for q in parse_quants(list(quants))]
    dev, calib, head, budget = _setup(device, ram_bytes, bandwidth_gbps, calibrate, headroom_bytes)
    rows = [_row(families.spec(m), q, ctx=ctx, cache_type=cache_type, device=dev, budget=budget, calib=calib,
                 eval_rows=[]) for m in families.members(family) for q in qs]
    res = PlanResult(SCHEMA, {"source": f"family:{family or 'all'}", "kind": "family",
                              "models": families.members(family)}, dev, ctx, cache_type, head, budget, calib, rows)
    res.recommendation = _decide(rows, budget, min_tps=min_tps, max_kld=max_kld, prefer=prefer, largest=True)
    res.notes = ["model shapes from edgeq/data/model-configs.json (config numbers only); file sizes estimate the "
                 "vocabulary's metadata from its size."] + _notes(families.spec(families.members(family)[0]), 0, rows,
                                                                   calib)[-3:-1]
    return res
