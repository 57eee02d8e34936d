"""What ``convert`` has to make and whether it may: file names, recipes (what makes a file current),
the importance matrix, and the disk-space check done before anything is written."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .. import manifest, system
from ..errors import DiskSpaceError, UsageError
from ..files import safe_name, sha256_file
from ..llamacpp import Toolchain, llama_cpp_version
from ..llamacpp.quantize import Overrides, compute_imatrix
from ..output import Progress, note
from ..quants import FALLBACK, QuantType, parse_quant
from ..sources import checkpoint
from ..sources.texts import calibration_text_file, read_user_text

MIN_CALIBRATION_WORDS = 1024
# Room left free beyond the estimate: file systems misbehave when completely full.
DISK_MARGIN_BYTES = 256 * 1024 * 1024
# Beyond the weights: header, tokenizer vocab and merges (a 150k vocab is ~10 MiB), alignment.
GGUF_OVERHEAD_BYTES = 32 * 1024 * 1024


def output_name(name: str, qtype: str) -> str:
    """llama.cpp-style file names: ``<Name>-Q8_0.gguf``."""
    return f"{safe_name(name)}-{qtype}.gguf"


def recipe(src_info: dict[str, object], tc: Toolchain, *parts: str) -> str:
    raw = json.dumps([src_info["fingerprint"], llama_cpp_version(tc), *parts])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


Step = tuple[QuantType, str, Path, str, bool]  # type, label, path, recipe, up to date


def plan_steps(out: Path, stem: str, base: QuantType, targets: list[QuantType], base_recipe: str,
          old: manifest.Manifest | None, overrides: Overrides, imatrix_recipe: str | None) -> list[Step]:
    """Every file to have, in the order to make it: floats first (quants read the base)."""
    wanted = [base] + [q for q in targets if q.name != base.name]
    wanted.sort(key=lambda q: (not q.float_type, q is not base))
    steps = []
    for q in wanted:
        label = q.name if q.float_type else overrides.label(q.name)
        recipe = base_recipe if q is base else short_hash(f"{base_recipe}:{label}:{imatrix_recipe if overrides.imatrix else ''}")
        path = out / output_name(stem, label)
        steps.append((q, label, path, recipe, manifest.is_current(out, old, path.name, recipe)))
    return steps


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def calibration_text(calibration: str | Path | None) -> Path:
    if calibration is None:
        return calibration_text_file()
    path = Path(calibration).expanduser()
    hint = "Pass --calibration FILE with plain text (a few hundred KB is plenty)."
    text = read_user_text(path, "--calibration", hint=hint)
    # llama-imatrix needs two of its 512-token contexts; a word is at least a token in every tokenizer we ship.
    if (words := len(text.split())) < MIN_CALIBRATION_WORDS:
        raise UsageError(f"calibration text {path} has {words} words; llama-imatrix needs at least "
                         f"{MIN_CALIBRATION_WORDS} tokens (two 512-token contexts).", hint=hint)
    return path


def imatrix_recipe(base_recipe: str, text: Path, chunks: int) -> str:
    return short_hash(f"{base_recipe}:{sha256_file(text)}:{chunks}")


def ensure_imatrix(tc: Toolchain, base_path: Path, text: Path, out: Path, stem: str, recipe: str, chunks: int,
                    threads: int | None, progress: bool) -> Path:
    """The importance matrix for this base file and text, computed once (its recipe is in its name)."""
    # Kept in a subfolder so that globbing the folder for models never picks it up.
    path = out / "imatrix" / f"{stem}-{recipe}.gguf"
    if not path.exists():
        with Progress(" imatrix", chunks, progress) as bar:
            compute_imatrix(tc, base_path, text, path, chunks=chunks, threads=threads, on_step=bar.update_to)
    return path


def estimate_output_bytes(parameters: int, q: QuantType, hidden_size: object = None) -> int:
    """A GGUF's expected size, on the high side: weights at the type's bits (its fallback's where
    rows don't fit 256-blocks, +10% for the _M mixes' larger tensors) plus header and vocab."""
    bits = q.bits_per_weight
    if q.base in FALLBACK and isinstance(hidden_size, int) and hidden_size % 256:
        bits = max(bits, parse_quant(FALLBACK[q.base]).bits_per_weight)
    return int(parameters * bits / 8 * (1.0 if q.float_type else 1.1)) + GGUF_OVERHEAD_BYTES


def check_free_disk(out: Path, needs: dict[str, int]) -> None:
    """Refuse, before anything is written, when ``out`` cannot hold ``needs`` (name -> bytes) plus the margin."""
    need = sum(needs.values())
    if not need:
        return
    free = system.free_disk_bytes(out)
    if need + DISK_MARGIN_BYTES > free:
        gib = 1024**3
        each = ", ".join(f"{name} {n / gib:.2f}" for name, n in needs.items())
        raise DiskSpaceError(f"not enough disk in {out}: the outputs need about {need / gib:.2f} GiB ({each}) "
                             f"+{DISK_MARGIN_BYTES / gib:.2f} GiB margin, and {free / gib:.2f} GiB are free.",
                             hint="Free some space, pick fewer types, or pass -o on a larger disk.")


def check_disk(out: Path, ck: checkpoint.Checkpoint, plan: list[Step], *, extra: dict[str, int] | None = None) -> None:
    """``extra``: bytes held only while the run lasts (a merge's merged checkpoint), by name."""
    hidden = ck.config.get("hidden_size")
    check_free_disk(out, {label: estimate_output_bytes(ck.parameters, q, hidden)
                          for q, label, _, _, current in plan if not current} | (extra or {}))


def _model_of(source: dict[str, object]) -> str:
    """Which model a manifest's ``source`` names: the repo for a Hub source, the embedded model wherever it was
    materialised (``EDGEQ_MODELS_DIR`` may differ between runs), else the checkpoint's resolved path."""
    if source.get("kind") == "hub":
        return str(source.get("repo_id"))
    if source.get("kind") in ("embedded", "packaged"):  # the packaged embedding model (minilm) too
        return f"the embedded {Path(str(source.get('path'))).name}"
    return str(Path(str(source.get("path"))).expanduser().resolve())


def own_folder(out: Path, src_info: dict[str, object]) -> Path:
    """``out``, or, when it holds another model's files, ``out-<hash>``: where bench and eval (which take no
    -o) convert a model whose name another one already uses (``Qwen/X`` and ``unsloth/X``)."""
    old = manifest.load(out) if out.is_dir() else None
    if old is None or _model_of(old.source) == _model_of(src_info):
        return out
    return out.with_name(f"{out.name}-{short_hash(_model_of(src_info))[:8]}")


def same_model_or_refuse(out: Path, old: manifest.Manifest | None, src_info: dict[str, object], *,
                         force: bool) -> manifest.Manifest | None:
    """The folder's manifest, if it records the same model; a folder of another model is refused
    (one manifest has one source, so its files would be relabelled as this model's), or, with
    ``force``, forgotten with a note."""
    if old is None or _model_of(old.source) == _model_of(src_info):
        return old
    if not force:
        raise UsageError(f"{out} holds files converted from {_model_of(old.source)}; converting "
                         f"{_model_of(src_info)} there would record them as this model's.",
                         hint="Pass another -o (or --name), or --force to make this folder this model's.")
    note(f"{out} held files of {_model_of(old.source)}; its manifest now records only this model's "
         f"(left on disk, unrecorded: {', '.join(old.files) or 'none'})")
    return None
