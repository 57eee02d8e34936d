"""The convert job: HF checkpoint → float GGUF → quantized GGUFs, each recorded in the manifest.

The vendored ``convert_hf_to_gguf.py`` writes the float GGUF and the vendored
``llama-quantize`` makes each quant from it, so both come from one llama.cpp.
"""
from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import config, manifest
from ..errors import SourceError, ToolFailed, UsageError
from ..files import atomic_output, ensure_folder, folder_lock, remove_stale_incomplete, safe_name
from ..llamacpp import (
    Toolchain,
    find_toolchain,
    llama_cpp_version,
    run_tool,
    supported_architectures,
)
from ..llamacpp.converter import projector_architectures
from ..llamacpp.quantize import Overrides, quantize, what_failed
from ..llamacpp.would_write import NO_REMOTE_CODE
from ..output import Progress, note
from ..quants import (
    FLOAT_OUTTYPES,
    LEGACY_TYPES,
    QuantType,
    parse_quant,
    parse_quants,
)
from ..sources import Source, checkpoint, resolve
from ..sources import gguf as gguf_info
from ..sources.adapter import check_lora_scale
from ..sources.gguf_values import non_finite_tensors
from ..sources.sentence import checkpoint_head
from . import adapters, steps
from .embedding import carry_head
from .projector import make_projectors
from .recorder import Recorder, TailHash

# Runs the vendored converter with transformers' remote-code loaders disabled.  The converter
# itself passes trust_remote_code=True for some tokenizers; checkpoint.check already refuses
# any auto_map, and this makes sure no path through transformers can import a repo's Python.
_NO_REMOTE_CODE = NO_REMOTE_CODE + """
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@dataclass
class OutputFile:
    type: str  # the llama-quantize type
    variant: str  # file-name label: the type, plus any overrides (Q4_K_M-L0-3_F16, Q4_K_M-imat)
    path: str
    size_bytes: int
    bits_per_weight: float
    seconds: float
    reused: bool
    tensor_types: dict[str, float] = field(default_factory=dict)  # type -> share of parameters
    fallback: dict[str, float] = field(default_factory=dict)  # legacy types used where K-blocks don't fit
    # Where the seconds went: the tool, reading the header back, and the sha256 (in the background, overlapped).
    stages: dict[str, float] = field(default_factory=dict)


@dataclass
class ConvertResult:
    source: dict[str, object]
    outdir: str
    manifest: str
    llama_cpp: str
    outputs: list[OutputFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    convert_peak_rss_bytes: int | None = None  # the HF → GGUF converter's peak RSS; None if nothing was converted
    adapter: adapters.AdapterOutput | None = None  # --lora: the adapter GGUF, in its own folder
    merged_lora: adapters.MergedLora | None = None  # --merge-lora: which adapter, at which scale
    projectors: list[OutputFile] = field(default_factory=list)  # a vision-language model's mmproj files (F16, Q8_0)


def convert(source: str | Path | Source | None = None, *, quants: list[str] | tuple[str, ...] = config.DEFAULT_QUANTS,
            outtype: str = config.DEFAULT_OUTTYPE, outdir: str | Path | None = None, name: str | None = None,
            keep_f16: bool = True, force: bool = False, threads: int | None = None,
            revision: str | None = None, token: str | None = None, allow_pickle: bool = False,
            endpoint: str | None = None, overrides: Overrides = Overrides(),  # noqa: B008 - frozen, no state
            calibration: str | Path | None = None, imatrix_chunks: int = config.DEFAULT_IMATRIX_CHUNKS,
            progress: bool = True, lora: str | Path | None = None, merge_lora: str | Path | None = None,
            lora_scale: float = 1.0) -> ConvertResult:
    """Convert ``source`` (repo id, HF folder or a resolved ``Source``; default: the embedded model) to GGUF quants.

    Outputs already made from the same source and options are reused unless
    ``force``.  Each file is written under a temporary name and renamed when
    whole; the manifest records sha256, size and recipe of each.  ``overrides``
    keeps some tensors at another type and/or quantizes with an importance
    matrix computed over ``calibration`` text (default: a Shakespeare play
    the eval text does not use); such files get a label in their name.

    ``lora`` (a PEFT folder or repo id) also writes that adapter as a GGUF against this base, in a folder of its
    own (``result.adapter``); ``merge_lora`` instead makes every output from the base with the adapter merged in
    at ``lora_scale`` (named ``<base>-<adapter>`` unless ``name``).  An adapter that does not fit the
    base is refused before anything is converted.
    """
    started = time.perf_counter()
    if outtype.lower() not in FLOAT_OUTTYPES:
        raise UsageError(f"unknown --outtype {outtype!r}.", hint="Use one of: f16, bf16, f32.")
    base = parse_quant(FLOAT_OUTTYPES[outtype.lower()])
    targets = parse_quants(list(quants))
    if not targets:
        raise UsageError("no quantization type requested.", hint="Pass --q8, --q4 or --quant TYPE.")
    for q in targets:
        if q.needs_imatrix and not overrides.imatrix:
            raise UsageError(f"{q.name} needs an importance matrix.",
                             hint="Add --imatrix, or pick a type such as Q4_K_M, Q5_K_M, Q6_K or Q8_0.")
    if lora and merge_lora:
        raise UsageError("--lora and --merge-lora both name an adapter; pick one.",
                         hint="--lora writes the adapter GGUF beside the base, --merge-lora a merged model.")
    check_lora_scale(merge_lora, lora_scale, flag="--merge-lora")  # run, bench and eval scale a --lora file
    tc = find_toolchain()
    src = source if isinstance(source, Source) else resolve(source, revision=revision, token=token,
                                                            endpoint=endpoint, progress=progress)
    adapters.refuse_adapter_as_model(src)
    if not src.is_checkpoint or src.path is None:
        raise UsageError(f"{src.path} is already GGUF; convert makes GGUFs from an HF checkpoint.",
                         hint="Pass the HF checkpoint folder or repo id it came from.")
    src_info = src.record()
    ck = checkpoint.check(src.path, supported=supported_architectures(tc.llama_dir), allow_pickle=allow_pickle)
    head = checkpoint_head(src.path)  # a sentence-embedding head llama.cpp cannot apply is refused before any work
    if ck.architecture not in checkpoint.tested_architectures():
        check = "eval embeddings" if head else "eval ppl"
        note(f"{ck.architecture} converts with the vendored llama.cpp but is not in edgeq's architecture matrix, "
             f"so it is untested here: check the F16 file against the checkpoint with `edgeq {check}`.")
    overrides.check_layers(ck.config.get("num_hidden_layers"))
    adapter_arg = lora or merge_lora
    adapter = adapters.prepare(adapter_arg, ck, src.name, revision=revision, token=token, endpoint=endpoint,
                               progress=progress) if adapter_arg else None
    calib = steps.calibration_text(calibration) if overrides.imatrix else None
    stem = safe_name(name) if name else f"{src.name}-{adapter.source.name}" if merge_lora and adapter else src.name
    out = ensure_folder(Path(outdir) if outdir else steps.own_folder(config.models_dir() / stem, src_info))
    # One run at a time per folder: a second waits, then sees the first's files in the manifest and reuses
    # them, instead of racing it for the same names (which lost finished outputs from the manifest).
    with folder_lock(out, doing="converts"):
        for stale in remove_stale_incomplete(out):
            note(f"removed {stale.name}, left by an interrupted run")

        old = steps.same_model_or_refuse(out, manifest.load(out), src_info, force=force)
        mf = manifest.Manifest(source=src_info, llama_cpp=llama_cpp_version(tc),
                               options={"outtype": base.name, "quants": [q.name for q in targets]})
        if old:
            # Kept even under --force: each entry is replaced when its file is, so a run killed half-way
            # leaves the files it had not reached yet still recorded.
            mf.files = dict(old.files)
            if old.options.get("tuned"):  # edgeq tune's records of its files, which convert does not remake
                mf.options["tuned"] = old.options["tuned"]
        merged = adapters.merge_recipe(adapter, lora_scale) if merge_lora and adapter else ()
        if merged and adapter:
            mf.options["merge_lora"] = {"adapter": adapter.source.record(), "scale": lora_scale}
        base_recipe = steps.recipe(src_info, tc, base.name, *merged)
        imatrix_recipe = steps.imatrix_recipe(base_recipe, calib, imatrix_chunks) if calib else None
        plan = steps.plan_steps(out, stem, base, targets, base_recipe, None if force else old, overrides,
                                imatrix_recipe)
        # A merge also holds the merged checkpoint while it converts it.
        steps.check_disk(out, ck, plan, extra=adapters.merge_disk(ck, adapter) if merged and adapter and not plan[0][4]
                         else None)

        result = ConvertResult(src_info, str(out), str(manifest.manifest_path(out)), mf.llama_cpp)
        base_path = out / steps.output_name(stem, base.name)
        with Recorder(out, mf) as rec:
            for q, label, path, recipe, current in plan:
                if current:
                    result.outputs.append(_describe(path, q, label, 0.0, gguf_info.read(path), reused=True))
                    continue
                t0 = time.perf_counter()
                stages: dict[str, float] = {}
                digest = None
                if q.float_type and merged and adapter:
                    adapters.merge_float(ck, adapter, path, scale=lora_scale,
                                         convert=functools.partial(_convert_float, tc, dst=path, q=q, progress=progress))
                    stages["merge_and_convert"] = time.perf_counter() - t0
                elif q.float_type:
                    result.convert_peak_rss_bytes, digest, hashing = _convert_float(tc, ck, path, q, progress)
                    stages["convert_hf_to_gguf"] = time.perf_counter() - t0
                    if digest:
                        stages["sha256_while_written"] = hashing
                else:
                    imatrix = None
                    if overrides.imatrix and calib and imatrix_recipe:
                        imatrix = steps.ensure_imatrix(tc, base_path, calib, out, stem, imatrix_recipe, imatrix_chunks,
                                                       threads, progress)
                        stages["llama-imatrix"] = time.perf_counter() - t0
                    t1 = time.perf_counter()
                    with Progress(f"{label:>7}", None, progress) as bar:
                        quantize(tc, base_path, path, q, threads=threads, extra_args=overrides.args(imatrix),
                                 on_step=bar.update_to)
                    stages["llama-quantize"] = time.perf_counter() - t1
                t2 = time.perf_counter()
                info = gguf_info.read(path)
                stages["read_header"] = time.perf_counter() - t2
                rec.add(path, label, info.bits_per_weight, recipe, sha256=digest)  # else hashed while the next is made
                o = _describe(path, q, label, time.perf_counter() - t0, info, reused=False)
                o.stages = {k: round(v, 3) for k, v in stages.items()}
                result.outputs.append(o)
        for o in result.outputs:  # the others were hashed in the background; say what each took
            if rec.seconds.get(Path(o.path).name):
                o.stages["sha256_background"] = rec.seconds[Path(o.path).name]

        if ck.architecture in projector_architectures(tc.llama_dir):
            made = make_projectors(tc, ck, out, stem, src_info, mf, None if force else old, script=_NO_REMOTE_CODE,
                                   progress=progress)
            result.projectors = [_describe(p, parse_quant(t), f"mmproj-{t}", s, gguf_info.read(p), reused=r)
                                 for t, p, s, r in made]
        if not keep_f16 and base.name not in [q.name for q in targets]:
            (out / steps.output_name(stem, base.name)).unlink(missing_ok=True)
            mf.files.pop(steps.output_name(stem, base.name), None)
        manifest.save(out, mf)
        result.outputs = [o for o in result.outputs if Path(o.path).exists()]
        result.notes = [n for o in result.outputs if (n := fallback_note(o, ck))]
    if lora and adapter:
        result.adapter = adapters.write_adapter(tc, ck, src, adapter, out, force=force)
    if merged and adapter:
        result.merged_lora = adapters.MergedLora(adapter.source.arg or str(adapter.path), adapter.source.fingerprint,
                                                 lora_scale)
    result.seconds = round(time.perf_counter() - started, 2)
    return result


def _convert_float(tc: Toolchain, ck: checkpoint.Checkpoint, dst: Path, q: QuantType,
                   progress: bool) -> tuple[int | None, str | None, float]:
    """Write the float GGUF; return the converter's peak RSS and the file's sha256, hashed as it was written.

    The converter's default lazy mode (never pass --no-lazy) reads one tensor at a
    time from the memory-mapped checkpoint, so its peak RSS stays well under the
    checkpoint's size (figures in the README).
    """
    with atomic_output(dst) as tmp, Progress(f"{q.name:>7}", ck.tensors or None, progress) as bar:
        done = 0

        def on_line(line: str) -> None:
            nonlocal done
            if "-->" in line:  # one line per tensor written
                done += 1
                bar.update_to(done)

        follower = TailHash(tmp)
        try:
            out = run_tool([sys.executable, "-c", _NO_REMOTE_CODE, tc.converter, ck.path, "--outfile", tmp,
                            "--outtype", q.name.lower()], name="convert_hf_to_gguf.py", on_line=on_line)
        except ToolFailed as e:
            raise what_failed(e, tmp, ck.path) from None
        finally:
            digest = follower.finish()
        _refuse_non_finite(tmp, q)  # before the rename: a broken model never sits under its final name
        if (head := checkpoint_head(Path(ck.path))) is not None:
            carry_head(tmp, head, Path(ck.path))
            digest = None  # rewritten after it was hashed: the recorder hashes it again in the background
    return out.peak_rss_bytes, digest, follower.seconds


def _refuse_non_finite(path: Path, q: QuantType) -> None:
    bad = non_finite_tensors(path)
    if not bad:
        return
    first = bad[0]
    more = f" and {len(bad) - 1} more tensor(s)" if len(bad) > 1 else ""
    overflow = (" Values beyond F16's ±65504 become Inf, so finite weights that large need --outtype bf16 or f32."
                if q.name == "F16" else "")
    raise SourceError(f"the weights hold NaN or Inf: tensor {first.name!r} has {first.count:,} non-finite "
                      f"{first.type} values{more} after conversion to {q.name}, so the model could only print "
                      f"nothing or score nan.{overflow}",
                      hint="Check the checkpoint (a damaged download or a diverged fine-tune); nothing was written.")


def _describe(path: Path, q: QuantType, label: str, seconds: float, info: gguf_info.GGUFInfo, *,
              reused: bool) -> OutputFile:
    shares = {t: round(s.parameters / info.parameters, 4) for t, s in info.tensor_types.items()}
    fallback = {t: s for t, s in shares.items() if t in LEGACY_TYPES} if q.block_size == 256 else {}
    return OutputFile(type=q.name, variant=label, path=str(path), size_bytes=info.file_size_bytes,
                      bits_per_weight=info.bits_per_weight, seconds=round(seconds, 2), reused=reused,
                      tensor_types=shares, fallback=fallback)


def fallback_note(o: OutputFile, ck: checkpoint.Checkpoint) -> str | None:
    """Say plainly when most of a K-quant is really a legacy type."""
    share = sum(o.fallback.values())
    if share < 0.01:
        return None
    hidden = ck.config.get("hidden_size")
    types = "/".join(o.fallback)
    return (f"{o.variant}: {share:.0%} of the weights are {types}, not {parse_quant(o.type).base}-family: "
            f"llama.cpp falls back where a row's length (hidden size {hidden}) is not a multiple of 256, "
            f"so the file has {o.bits_per_weight:.2f} bits/weight.")

