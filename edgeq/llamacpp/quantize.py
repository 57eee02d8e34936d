"""Run llama-quantize and llama-imatrix: one GGUF in, one GGUF out, written whole or not at all.

``Overrides`` carries what makes a quant "partial" (layers, output or embeddings
kept at another type, as the opt-350m study quantized only some layers) or
importance-weighted; it gives each such variant a deterministic file-name label.
"""
from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DiskSpaceError, EdgeqError, SourceError, ToolFailed, UnsafeSourceError, UsageError
from ..files import atomic_output, final_name
from ..quants import QUANT_TYPES, QuantType
from ..system import default_threads
from . import Toolchain, run_tool
from .converter import converter_error
from .process import DISK_FULL_HINT

_STEP = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]")
_IMATRIX_CHUNK = re.compile(r"\[(\d+)\]")

# ggml tensor types a user may pin tensors to (llama-quantize parses them case-insensitively).
TENSOR_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K", "Q5_1", "Q5_0", "Q4_K", "Q4_1", "Q4_0", "Q3_K", "Q2_K")


@dataclass(frozen=True)
class Overrides:
    """Per-tensor exceptions to a quantization type, and whether an importance matrix is used."""

    keep_layers: tuple[tuple[tuple[int, ...], str], ...] = ()  # (layer indices, ggml type)
    output_type: str | None = None
    embeddings_type: str | None = None
    imatrix: bool = False

    def __bool__(self) -> bool:
        return bool(self.keep_layers or self.output_type or self.embeddings_type or self.imatrix)

    def label(self, qtype: str) -> str:
        """Deterministic variant name, e.g. ``Q4_K_M-L0-3_F16-imat``; the plain type when nothing is overridden."""
        parts = [qtype]
        parts += [f"L{_ranges(layers)}_{t}" for layers, t in self.keep_layers]
        if self.output_type:
            parts.append(f"out_{self.output_type}")
        if self.embeddings_type:
            parts.append(f"emb_{self.embeddings_type}")
        if self.imatrix:
            parts.append("imat")
        return "-".join(parts)

    def args(self, imatrix_path: Path | None = None) -> list[str]:
        """llama-quantize arguments: regex ``--tensor-type`` rules for layers (blk.N.*)."""
        argv: list[str] = []
        for layers, t in self.keep_layers:
            argv += ["--tensor-type", rf"blk\.({'|'.join(map(str, layers))})\.={t.lower()}"]
        if self.output_type:
            argv += ["--output-tensor-type", self.output_type.lower()]
        if self.embeddings_type:
            argv += ["--token-embedding-type", self.embeddings_type.lower()]
        if self.imatrix:
            if imatrix_path is None:
                raise ValueError("imatrix requested but no file given")
            argv += ["--imatrix", str(imatrix_path)]
        return argv

    def check_layers(self, n_layers: int | None) -> None:
        """Refuse layer numbers the model does not have, before any work starts."""
        if n_layers is None:
            return
        for layers, _ in self.keep_layers:
            bad = [i for i in layers if i >= n_layers]
            if bad:
                raise UsageError(f"--keep-layers names layer {bad[0]}, but the model has layers 0-{n_layers - 1}.",
                                 hint=f"Use numbers from 0 to {n_layers - 1}.")


def _ranges(layers: tuple[int, ...]) -> str:
    """(0, 1, 2, 3, 7) → "0-3.7" (no commas or equals signs in file names)."""
    groups: list[list[int]] = []
    for i in layers:
        if groups and i == groups[-1][1] + 1:
            groups[-1][1] = i
        else:
            groups.append([i, i])
    return ".".join(f"{a}-{b}" if b > a else f"{a}" for a, b in groups)


def parse_tensor_type(text: str, option: str) -> str:
    """A ggml tensor type from a user string; quant mixes map to their base (Q4_K_M → Q4_K)."""
    key = text.strip().upper().replace("-", "_")
    if key in QUANT_TYPES and key not in TENSOR_TYPES:
        key = QUANT_TYPES[key].base
    if key not in TENSOR_TYPES:
        raise UsageError(f"{option}: unknown tensor type {text!r}.", hint=f"Use one of: {', '.join(TENSOR_TYPES)}.")
    return key


def parse_keep_layers(spec: str) -> tuple[tuple[int, ...], str]:
    """``"0-3=F16"``, ``"0,5,7=Q8_0"`` or ``"0-3"`` (F16) → ((0, 1, 2, 3), "F16")."""
    layers_text, _, type_text = spec.partition("=")
    layers: set[int] = set()
    try:
        for part in layers_text.split(","):
            lo, _, hi = part.strip().partition("-")
            a, b = int(lo), int(hi or lo)
            if a < 0 or b < a:
                raise ValueError
            layers.update(range(a, b + 1))
    except ValueError:
        raise UsageError(f"--keep-layers {spec!r}: expected layer numbers like 0-3 or 0,2,5, then =TYPE.",
                         hint="Example: --keep-layers 0-3=F16") from None
    return tuple(sorted(layers)), parse_tensor_type(type_text or "F16", "--keep-layers")


def quantize(tc: Toolchain, src: Path, dst: Path, qtype: QuantType, *, threads: int | None = None,
             extra_args: tuple[str, ...] | list[str] = (), on_step: Callable[[int, int], None] | None = None) -> Path:
    """Quantize ``src`` (an F16/BF16/F32 GGUF) to ``qtype`` at ``dst``.

    ``on_step(done, total)`` is called per tensor, parsed from llama-quantize's
    ``[ 12/ 272]`` lines.
    """

    def on_line(line: str) -> None:
        m = _STEP.match(line)
        if m and on_step:
            on_step(int(m.group(1)), int(m.group(2)))

    with atomic_output(dst) as tmp:
        argv: list[str | Path] = [tc.tool("llama-quantize"), *extra_args, src, tmp, qtype.name]
        if threads:
            argv.append(str(threads))
        try:
            run_tool(argv, name="llama-quantize", on_line=on_line)
        except ToolFailed as e:
            raise what_failed(e, tmp, src) from None
    return dst


# llama-quantize's own reason, on the line before its generic last one.
_REASON = re.compile(r"failed to quantize: (.+)$")
_INVALID = re.compile(r"tensor '([^']+)' has invalid data")
DISK_FULL_BYTES = 8 << 20
# torch.load(weights_only=True) refusing a pickle (the converter's traceback ends in one of these).
_PICKLE_REFUSED = re.compile(r"Weights only load failed|UnpicklingError")


def what_failed(e: ToolFailed, partial: Path, src: Path) -> EdgeqError:
    """Name a llama tool's failure for what it is, while its partial output still takes its room.

    A full disk: llama-quantize says only ``basic_ios::clear: iostream error``, so the
    free space left beside the partial file tells.  Invalid data (NaN/Inf): the
    tensor's name, a user's problem (exit 1), not the environment's.  Else the tool's
    own reason rather than its generic last line.
    """
    try:
        free = shutil.disk_usage(partial.parent).free
    except OSError:
        free = DISK_FULL_BYTES
    if free < DISK_FULL_BYTES or e.hint == DISK_FULL_HINT:
        return DiskSpaceError(f"the disk filled up while {e.tool} wrote {partial.parent / final_name(partial)} "
                              f"({free / 2**20:.1f} MiB left).", hint=DISK_FULL_HINT)
    if _PICKLE_REFUSED.search(e.tail):
        return UnsafeSourceError(f"{src} holds a pickle that torch's safe loader refused: unpickling it would "
                                 "run code or build objects that are not tensors, and nothing of it ran.",
                                 hint="Use the safetensors version of the model; --allow-pickle only loads plain tensors.")
    reasons = [m.group(1).strip() for line in e.tail.splitlines() if (m := _REASON.search(line))]
    if reasons and (bad := _INVALID.search(reasons[-1])):
        return SourceError(f"{src.name} holds NaN or Inf: {e.tool} refused tensor {bad.group(1)!r} as invalid data.",
                           hint="Convert again from a checkpoint whose weights are finite (edgeq convert checks).")
    if reasons:
        return ToolFailed(e.tool, e.returncode, reasons[-1], hint=e.hint)
    return converter_error(e, src.name) or e


def compute_imatrix(tc: Toolchain, model: Path, text: Path, dst: Path, *, ctx: int = 512, chunks: int = 64,
                    threads: int | None = None, on_step: Callable[[int, int], None] | None = None) -> Path:
    """Importance matrix of ``model`` over ``text`` with llama-imatrix (GGUF format), written whole."""

    def on_line(line: str) -> None:
        if on_step and line.startswith("[") and (found := _IMATRIX_CHUNK.findall(line)):
            on_step(int(found[-1]), chunks)

    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(dst) as tmp:
        argv: list[str | Path] = [tc.tool("llama-imatrix"), "-m", model, "-f", text, "-o", tmp,
                                  "--output-format", "gguf", "-c", str(ctx), "--chunks", str(chunks), "--no-ppl"]
        argv += ["-t", str(threads or default_threads())]
        try:
            run_tool(argv, name="llama-imatrix", on_line=on_line)
        except ToolFailed as e:
            raise what_failed(e, tmp, model) from None
    return dst
