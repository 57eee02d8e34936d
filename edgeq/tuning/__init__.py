"""`edgeq tune`: the GGUF with the least KLD for a budget, its per-tensor types chosen by measuring this model.

    res = edgeq.tune("HuggingFaceTB/SmolLM2-135M-Instruct", size="100MiB")

Stages, each cached under ``<outdir>/tune/<key>/`` (``key``: the F16 file, the imatrix and llama.cpp), so an
interrupted tune resumes and a second budget on the same model only allocates, quantizes and verifies:
the F16 file (``convert``), the importance matrix on the calibration text, one ``--pure`` quantization per
candidate type (``pertype``), each weight's Fisher information (``fisher``), the Fisher-weighted error of every
tensor in every type, the probes' KLD on the calibration text and the fit (``sensitivity``, ``probes``); then
the allocation (``allocate``), the recipe (a ``llama-quantize --tensor-type-file``), the file, its verification
on the evaluation text next to the stock recipes around it (``verify``), and its report.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import compute, config, manifest
from ..conversion import convert
from ..conversion.models import require_generator_source
from ..conversion.steps import ensure_imatrix, short_hash
from ..errors import UsageError
from ..files import atomic_output, folder_lock, sha256_file, write_json_atomic
from ..llamacpp import find_toolchain, llama_cpp_version
from ..llamacpp.quantize import quantize
from ..output import Progress, human_bytes
from ..planning import devices, kernels
from ..planning.devices import parse_size
from ..quants import parse_quant
from ..reporting import report
from ..sources import Source, resolve
from ..sources.gguf import read as read_gguf
from ..sources.gguf_header import read_header
from ..system import default_threads
from . import pertype
from .allocate import (
    allocate,
    allowed_types,
    budget_bytes,
    check_floor,
    first_types,
    floor_bytes,
    for_kld,
    largest,
    lower_type,
    padded,
    smallest,
)
from .fisher import fisher_complete, fisher_gguf, matmul_dtype
from .preflight import check_source_floor, preflight
from .probes import calibrate, probe_types
from .sensitivity import (
    GROUPS,
    TensorCost,
    collect,
    ftype_for,
    group_of,
    load_json,
    tensor_type_rules,
)
from .speedcap import cap
from .verify import Row, verdict, verify

SCHEMA = "edgeq-tune/1"
# The stock recipes a tuned file may be compared with: the two either side of its size are (``verify.bracket``).
STOCK = ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")
DEFAULT_IMATRIX_CHUNKS = config.DEFAULT_IMATRIX_CHUNKS
EVAL_TOKENS = 8192  # of the evaluation text


@dataclass
class TuneResult:
    schema: str
    source: dict[str, object]
    budget: dict[str, object]  # kind, asked, bytes (of the file)
    output: str
    recipe: str  # the --tensor-type-file beside the GGUF
    recipe_sha256: str
    imatrix: str
    size_bytes: int
    predicted_size_bytes: int
    bits_per_weight: float
    predicted_kld: float
    measured_kld: float | None
    type_shares: dict[str, float]
    calibration: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    verdict: str = ""
    stages: dict[str, float] = field(default_factory=dict)
    replay: str = ""  # the plain llama-quantize command that makes the same file
    report: str = ""  # ``edgeq report``'s Markdown of this result, with its KLD-vs-size chart
    speed: dict[str, Any] = field(default_factory=dict)  # the speed floor against the stock recipe (``speedcap``)
    device: str = "cpu"  # where this machine scored and timed the files (--device, resolved): cpu | metal

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def tune(source: str | Source | None = None, *, size: str | int | None = None, bpw: float | None = None,
         ram: str | None = None, ctx: int = 4096, device: str | None = None, max_kld: float | None = None,
         types: list[str] | None = None, outdir: str | Path | None = None, name: str | None = None,
         calibration: str | Path | None = None, imatrix_chunks: int = DEFAULT_IMATRIX_CHUNKS,
         eval_text: str | Path | None = None, eval_tokens: int = EVAL_TOKENS, stock: tuple[str, ...] = STOCK,
         threads: int | None = None, progress: bool = True, revision: str | None = None,
         token: str | None = None, min_speed: float = 1.0, compute_device: str = "auto") -> TuneResult:
    """Write the GGUF of least predicted KLD within one budget, no slower in pp and tg than ``min_speed`` × the stock
    recipe of its size on the target (0: KLD alone), its recipe, and verify it against stock recipes.

    ``device`` names the budget's device (the plan table); ``compute_device`` (auto, cpu, metal: ``--device`` on the
    command line) is where this machine scores and times the files, recorded in the result."""
    if not (min_speed >= 0 and min_speed < 10):
        raise UsageError(f"--min-speed {min_speed:g}: expected a ratio to the stock recipe's speed from 0 to 10.",
                         hint="1 (the default) = no slower than stock; 0 = KLD alone.")
    # Every option now, not after an hour of measuring; then the source, and the budget against its size.
    allowed, calib = preflight(size=size, bpw=bpw, ram=ram, device=device, max_kld=max_kld, types=types, ctx=ctx,
                               outdir=outdir, name=name, calibration=calibration, imatrix_chunks=imatrix_chunks,
                               eval_text=eval_text, eval_tokens=eval_tokens, threads=threads)
    on = compute.choose(compute_device)
    tc = find_toolchain()
    src = source if isinstance(source, Source) else resolve(source, revision=revision, token=token, progress=progress)
    require_generator_source(src, "edgeq tune measures the KLD of its next-token predictions")
    check_source_floor(src, size if isinstance(size, int) else parse_size(size) if size else None, allowed)
    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    base = convert(src, quants=["F16"], outdir=outdir, name=name, progress=progress, revision=revision, token=token)
    f16 = Path(next(o.path for o in base.outputs if o.type == "F16"))
    out, stem = Path(base.outdir), f16.name[: -len("-F16.gguf")]
    stages["convert"] = time.perf_counter() - t0
    mf = manifest.load(out)
    assert mf is not None  # convert wrote it
    header = read_header(f16)
    n_params = sum(t.n_elements for t in header.tensors)
    limit, kind, asked = budget_bytes(size, bpw, ram, ctx, device, max_kld, n_params, f16)
    if max_kld is None:  # from the float file's header: before the importance matrix and the per-type files
        check_floor(limit, floor_bytes(header, allowed), allowed)
    with folder_lock(out, doing="tunes"):
        t = time.perf_counter()
        imat_recipe = short_hash(f"{mf.files[f16.name].sha256}|{sha256_file(calib)[:16]}|{imatrix_chunks}")
        imatrix = ensure_imatrix(tc, f16, calib, out, stem, imat_recipe, imatrix_chunks, threads, progress)
        stages["imatrix"] = time.perf_counter() - t
        work = out / "tune" / short_hash(f"{mf.files[f16.name].sha256}|{imat_recipe}|{llama_cpp_version(tc)}")
        work.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        fisher = fisher_gguf(Path(str(mf.source["path"])), calib, work, threads=threads, progress=progress)
        stages["fisher"] = time.perf_counter() - t

        # What weighs the errors decides the probes, and so the types to measure first: the Fisher diagonals
        # where they cover every tensor the Q8_0 file quantizes, else the importance matrix.
        q8 = pertype.make(tc, f16, imatrix, work, stem, ["Q8_0"], threads, progress)["Q8_0"]
        quantizable = {t.name for t in read_header(q8).tensors if t.type not in ("F32", "F16", "BF16")}
        weights = fisher if fisher is not None and fisher_complete(fisher, quantizable) else imatrix
        weighting = "fisher" if weights == fisher else "imatrix"
        made = first_types(allowed, None if max_kld is not None else 8 * (limit - header.data_offset_bytes) / n_params,
                           set(probe_types(allowed, weighting)))
        cal = None
        while True:  # widen the measured types downwards while the allocation presses against the narrowest
            t = time.perf_counter()
            per_type = pertype.make(tc, f16, imatrix, work, stem, sorted(made | {"Q8_0"}), threads, progress)
            stages["per-type quantizations"] = stages.get("per-type quantizations", 0.0) + time.perf_counter() - t
            t = time.perf_counter()
            costs = _costs(f16, per_type, weights, weighting, work, threads, progress)
            stages["errors"] = stages.get("errors", 0.0) + time.perf_counter() - t
            if cal is None:  # the probes' types are among the first measured: one calibration serves every round
                t = time.perf_counter()
                cal = calibrate(f16, per_type, costs, calib, work, allowed, weighting, threads, progress, on.device)
                stages["probes"] = time.perf_counter() - t
            qheader = read_header(per_type["Q8_0"])
            allowed_for = allowed_types({k: pertype.types_of(per_type[k]) for k in made}, allowed)
            quantizable = {c.name for c in costs}
            fixed = sum(padded(t.shape, t.type, qheader.alignment) for t in qheader.tensors if t.name not in quantizable)
            head = qheader.data_offset_bytes + fixed
            lo = head + smallest(costs, cal, allowed_for, qheader.alignment)
            hi = head + largest(costs, cal, allowed_for, qheader.alignment)
            if max_kld is not None:
                alloc = for_kld(costs, cal, float(max_kld), allowed_for, qheader.alignment, lo - head, hi - head)
            elif limit < lo:
                lower = lower_type(costs, allowed_for, qheader.alignment, allowed, made, None)
                if lower:
                    made.add(lower)
                    continue
                raise UsageError(f"a {human_bytes(limit)} file is below the smallest this model can be with these "
                                 f"types ({human_bytes(lo)}).", hint=f"Ask for at least {human_bytes(lo)}, or allow smaller types.")
            else:
                alloc = allocate(costs, cal, min(limit, hi) - head, allowed=allowed_for, alignment=qheader.alignment)
            lower = lower_type(costs, allowed_for, qheader.alignment, allowed, made, alloc.types)
            if lower is None:
                break
            made.add(lower)
        speed: dict[str, Any] = {}
        if min_speed and max_kld is None:  # a --max-kld file has no stock recipe "of its size" to keep up with
            t = time.perf_counter()
            alloc, speed = cap(alloc, costs, cal, min(limit, hi) - head, allowed=allowed_for,
                               alignment=qheader.alignment, per_type=per_type, f16=f16, stock=stock, size=limit,
                               min_speed=min_speed, here=device is None, kind=_kind(device), work=work, threads=threads,
                               device=on.device)
            stages["speed"] = time.perf_counter() - t
        if max_kld is not None:
            limit = head + alloc.tensor_bytes  # the size the KLD asked for
        header = qheader
        predicted_size = head + alloc.tensor_bytes
        bpw_file = 8 * (predicted_size - header.data_offset_bytes) / n_params
        label = f"tuned-{bpw_file:.2f}bpw"
        dst = out / f"{stem}-{label}.gguf"
        recipe_path = out / f"{stem}-{label}.tensor-types.txt"
        text = tensor_type_rules(alloc.types)
        with atomic_output(recipe_path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        ftype = ftype_for(max(alloc.types.values(), key=list(alloc.types.values()).count))
        t = time.perf_counter()
        args = ["--imatrix", str(imatrix), "--tensor-type-file", str(recipe_path)]
        with Progress("   tuned", None, progress) as bar:
            quantize(tc, f16, dst, parse_quant(ftype), threads=threads, extra_args=args,
                     on_step=lambda d, n: bar.update_to(d, n))
        stages["quantize"] = time.perf_counter() - t
        info = read_gguf(dst)
        sha = hashlib.sha256(text.encode()).hexdigest()
        replay = f"llama-quantize {' '.join(args)} {f16.name} {dst.name} {ftype}"
        _record(out, dst, info, label, sha, kind, asked, limit, alloc.predicted_kld, imat_recipe)

        t = time.perf_counter()
        rows = verify(tc, f16, dst, imatrix, work, stem, stock, eval_text, eval_tokens, alloc, threads, progress,
                       info.file_size_bytes, also=speed.get("stock"), device=on.device)
        stages["verification"] = time.perf_counter() - t
        tuned = next(r for r in rows if r.tuned)
        _record(out, dst, info, label, sha, kind, asked, limit, alloc.predicted_kld, imat_recipe, tuned.kld_mean)
    shares: dict[str, float] = {}
    for tt in header.tensors:
        ty = alloc.types.get(tt.name, tt.type)
        shares[ty] = shares.get(ty, 0.0) + tt.n_elements / n_params
    res = TuneResult(SCHEMA, mf.source, {"kind": kind, "asked": asked, "bytes": limit}, str(dst), str(recipe_path),
                     sha, str(imatrix), info.file_size_bytes, predicted_size, info.bits_per_weight, alloc.predicted_kld,
                     tuned.kld_mean, {k: round(v, 4) for k, v in sorted(shares.items(), key=lambda x: -x[1])},
                     {**cal.to_dict(), "weighting": weighting,
                      **({"fisher_matmuls": matmul_dtype()} if weighting == "fisher" else {})}, rows, verdict(rows),
                     {k: round(v, 1) for k, v in stages.items()}, replay)
    res.speed, res.device = speed, on.device
    result_path = out / f"{stem}-{label}.tune.json"
    res.report = str(out / f"{stem}-{label}.report" / "report.md")
    write_json_atomic(result_path, res.to_dict())
    report([result_path], Path(res.report).parent)
    return res


def _kind(device: str | None) -> str:
    d = devices.named(device) if device else None
    return kernels.kind_of(d.backend if d else "cpu", d.repack_types if d else devices.local_repack_types())


def _costs(f16: Path, per_type: dict[str, Path], weights: Path, weighting: str, work: Path, threads: int | None,
           progress: bool) -> list[TensorCost]:
    """Every tensor's error in every per-type file, measured once per type (the cache grows with the types
    measured), weighed by ``weights``: the Fisher GGUF (``fisher``) or the importance matrix (``imatrix``)."""
    cache = work / f"errors-{weighting}.json"
    cached = load_json(cache) or {"types": [], "tensors": []}
    # The group is not cached: it is a rule of this edgeq (group_of), not a measurement.
    costs = {c["name"]: TensorCost(**{**c, "group": group_of(c["name"])}) for c in cached["tensors"]}
    missing = {k: p for k, p in per_type.items() if k not in cached["types"]}
    if missing:
        skip = {k: frozenset(pertype.elsewhere(p)) for k, p in missing.items()}
        for c in collect(f16, missing, weighting, weights, workers=threads or default_threads(), progress=progress,
                         skip=skip):
            costs.setdefault(c.name, TensorCost(c.name, c.group, c.shape)).errors.update(c.errors)
        write_json_atomic(cache, {"types": sorted(set(cached["types"]) | set(missing)),
                                  "tensors": [asdict(c) for c in costs.values()]})
    return list(costs.values())


def _record(out: Path, dst: Path, info: Any, label: str, sha: str, kind: str, asked: object, budget: int,
            predicted: float, imat_recipe: str, measured: float | None = None) -> None:
    """The manifest entry: recipe = the budget, the recipe's sha256 and the imatrix; plus tune's own record."""
    mf = manifest.load(out)
    assert mf is not None
    mf.files[dst.name] = manifest.record(dst, label, info.bits_per_weight, short_hash(f"{sha}|{imat_recipe}"))
    tunes = mf.options.setdefault("tuned", {})
    assert isinstance(tunes, dict)
    tunes[dst.name] = {"budget": {"kind": kind, "asked": asked, "bytes": budget}, "recipe_sha256": sha,
                       "imatrix_recipe": imat_recipe, "predicted_kld": predicted, "measured_kld": measured}
    manifest.save(out, mf)


__all__ = ["GROUPS", "SCHEMA", "Row", "TuneResult", "tune"]
