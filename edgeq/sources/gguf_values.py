"""Non-finite weights in a float GGUF: NaN or Inf in its F32, F16 and BF16 tensors.

A checkpoint with a NaN tensor converts "successfully", and the model it makes
prints nothing and scores ``nan``; values past F16's ±65504 become Inf the
same way.  Checking the written file catches both, by the exponent bits alone
(all ones: Inf or NaN), in chunks so memory stays flat.
"""
from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

from ..errors import GGUFError
from .gguf_header import read_header

# Per float type: the integer width and the exponent mask (all ones = Inf or NaN).
_EXPONENT = {"F32": ("uint32", 0x7F800000), "F16": ("uint16", 0x7C00), "BF16": ("uint16", 0x7F80)}
_CHUNK = 1 << 24  # elements per pass


@dataclass
class BadTensor:
    name: str
    type: str
    count: int  # values that are NaN or Inf


def non_finite_tensors(path: str | Path) -> list[BadTensor]:
    """Every float tensor of ``path`` that holds NaN or Inf, with how many such values (quantized ones are skipped)."""
    import numpy as np  # here, not at the top: `edgeq --help` must not pay for numpy

    h = read_header(path)
    bad = []
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        for t in h.tensors:
            if t.type not in _EXPONENT or not t.n_elements:
                continue
            width, mask = _EXPONENT[t.type]
            dtype = np.dtype(width).type
            values = np.frombuffer(m, dtype=dtype, count=t.n_elements, offset=h.data_offset_bytes + t.offset)
            count = 0
            try:
                for i in range(0, t.n_elements, _CHUNK):
                    count += int(np.count_nonzero((values[i:i + _CHUNK] & dtype(mask)) == mask))
            finally:
                del values  # the mmap cannot close while a view holds it (a BufferError would hide a Ctrl-C)
            if count:
                bad.append(BadTensor(t.name, t.type, count))
    return bad


def non_finite_logits_error(path: str | Path, consequence: str) -> GGUFError:
    """The error for a model whose logits came out NaN/Inf, blaming what the file shows: broken weights, or
    finite weights whose computation overflowed (ggml rounds activations to F16 for F16 weights, so an F16 file
    can overflow where the F32 one does not: measured on random Mamba models in the architecture matrix)."""
    name = Path(path).name
    bad = non_finite_tensors(path)
    if bad:
        return GGUFError(f"{name} gives non-finite logits: its tensor {bad[0].name} holds {bad[0].count} NaN/Inf "
                         f"values, so {consequence}.",
                         hint="Convert it again with edgeq convert, which refuses non-finite weights.")
    f16 = any(t.type == "F16" and len(t.shape) >= 2 for t in read_header(path).tensors)
    return GGUFError(f"{name} gives non-finite logits although its float tensors are finite (quantized ones are not "
                     f"checked): llama.cpp's computation overflowed, so {consequence}.",
                     hint="Use the F32 or BF16 file (F16 activations overflow past ±65504), or a quantized one." if f16
                     else "Convert and quantize it again from the checkpoint; if that fails too, report it with the file.")
