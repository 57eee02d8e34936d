"""The GGUF header parser behind ``sources.gguf``: ``struct`` over an mmap, never the tensor data.

Long string arrays (the vocabulary, the merges) are skipped by their lengths
alone, so any header reads in milliseconds.  The format's type table and block
sizes come from gguf-py's ``constants`` module, loaded without the package.
"""
from __future__ import annotations

import importlib.util
import math
import mmap
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import GGUFError
from ..files import missing_file

GGUF_MAGIC = b"GGUF"
SHOWN_ITEMS = 16  # arrays longer than this are shown as "[N items]"
# Numeric arrays up to this length are read (per-layer values); longer ones (token types, scores) are skipped.
READ_ITEMS = 4096
_STRING, _ARRAY = 8, 9
# GGUF value types: struct format of the scalars.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


def gguf_constants() -> ModuleType:
    """gguf-py's ``gguf.constants`` (GGMLQuantizationType, GGML_QUANT_SIZES, LlamaFileType) without numpy.

    It imports only the standard library, so it is loaded on its own and registered
    under its own name: a later ``import gguf`` then uses this very module.
    """
    if "gguf.constants" in sys.modules:
        return sys.modules["gguf.constants"]
    spec = importlib.util.find_spec("gguf")
    if spec is None or not spec.submodule_search_locations:
        raise GGUFError("the gguf package is not installed.", hint="Run `bash scripts/setup.sh`.")
    path = Path(list(spec.submodule_search_locations)[0]) / "constants.py"
    cspec = importlib.util.spec_from_file_location("gguf.constants", path)
    assert cspec is not None and cspec.loader is not None
    mod = importlib.util.module_from_spec(cspec)
    sys.modules["gguf.constants"] = mod
    cspec.loader.exec_module(mod)
    return mod


@dataclass
class TensorEntry:
    name: str
    shape: list[int]  # ggml order: shape[0] is the row length
    type: str  # ggml type name
    offset: int = 0  # within the data section
    n_bytes: int = 0

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


def tensor_table_bytes(tensors: Iterable[Any]) -> int:
    """Bytes of a GGUF's tensor table: per tensor (anything with ``name`` and ``shape``) its name, dimensions,
    type and offset."""
    return sum(8 + len(t.name.encode()) + 4 + 8 * len(t.shape) + 4 + 8 for t in tensors)


@dataclass
class GGUFHeader:
    """A GGUF's metadata and tensor table, read without touching tensor data."""

    path: str
    file_size_bytes: int
    data_offset_bytes: int  # header + padding: everything before the first tensor
    alignment: int
    # Scalars, strings, and arrays up to READ_ITEMS numbers or SHOWN_ITEMS strings; longer ones only in array_lengths.
    metadata: dict[str, Any] = field(default_factory=dict)
    array_lengths: dict[str, int] = field(default_factory=dict)
    tensors: list[TensorEntry] = field(default_factory=list)
    version: int = 3
    keys: list[str] = field(default_factory=list)  # every metadata key, in file order
    table_offset_bytes: int = 0  # where the tensor table starts: the magic, counts and metadata lie before it


def magic_of(path: Path) -> bytes:
    """The first four bytes of a file: b"GGUF" for a GGUF."""
    with open(path, "rb") as f:
        return f.read(4)


def _check_magic(path: Path) -> None:
    if not path.is_file():
        raise GGUFError(f"{path} {missing_file(path)}.", hint="Pass the path of a .gguf file.")
    if (magic := magic_of(path)) != GGUF_MAGIC:
        raise GGUFError(f"{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF').",
                        hint="Convert the model first with `edgeq convert`.")


class _Parser:
    """A cursor over the mapped header; every read is bounds-checked by ``struct`` or by ``need``."""

    def __init__(self, m: mmap.mmap) -> None:
        self.m, self.pos, self.size = m, 0, len(m)

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise ValueError(f"a length of {n} bytes at offset {self.pos} runs past the end of the file")

    def u32(self) -> int:
        (v,) = _U32.unpack_from(self.m, self.pos)
        self.pos += 4
        return int(v)

    def u64(self) -> int:
        (v,) = _U64.unpack_from(self.m, self.pos)
        self.pos += 8
        return int(v)

    def string(self) -> str:
        n = self.u64()
        self.need(n)
        s = self.m[self.pos:self.pos + n].decode("utf-8", errors="replace")
        self.pos += n
        return s

    def skip_strings(self, n: int) -> None:
        m, unpack, pos = self.m, _U64.unpack_from, self.pos
        for _ in range(n):  # only the lengths are read: the reason this reader is fast
            pos += 8 + unpack(m, pos)[0]
        self.pos = pos
        self.need(0)

    def value(self, vtype: int) -> tuple[Any, int | None]:
        """(value, array length or None); long arrays come back as None with their length."""
        if vtype == _STRING:
            return self.string(), None
        if vtype == _ARRAY:
            itype, n = self.u32(), self.u64()
            if itype == _STRING:
                if n > SHOWN_ITEMS:
                    self.skip_strings(n)
                    return None, n
                return [self.string() for _ in range(n)], n
            if itype == _ARRAY:  # arrays of arrays: not used by llama.cpp's keys; read them through
                return [self.value(_ARRAY)[0] for _ in range(n)], n
            fmt = _SCALARS[itype]
            width = struct.calcsize(fmt)
            self.need(n * width)
            if n > READ_ITEMS:
                self.pos += n * width
                return None, n
            vals = list(struct.unpack_from(f"<{n}{fmt}", self.m, self.pos))
            self.pos += n * width
            return vals, n
        fmt = "<" + _SCALARS[vtype]
        (v,) = struct.unpack_from(fmt, self.m, self.pos)
        self.pos += struct.calcsize(fmt)
        return v, None


def read_header(path: str | Path) -> GGUFHeader:
    """Parse the header and tensor table; raise ``GGUFError`` if the file is not a whole GGUF.

    Whole means: the header parses, every tensor's type is known, and every
    tensor's data lies inside the file (a truncated download fails here).
    """
    c = gguf_constants()
    p = Path(path)
    _check_magic(p)
    with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        r = _Parser(m)
        try:
            r.pos = 4
            version = r.u32()
            if version not in (2, 3):
                swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
                why = "big-endian GGUF files are not supported" if swapped in (2, 3) else f"version {version} is unknown"
                raise ValueError(why)
            n_tensors, n_kv = r.u64(), r.u64()
            meta: dict[str, Any] = {}
            lengths: dict[str, int] = {}
            keys = []
            for _ in range(n_kv):
                key = r.string()
                keys.append(key)
                val, n = r.value(r.u32())
                if n is not None:
                    lengths[key] = n
                if val is not None:
                    meta[key] = val
            tensors = []
            table_offset = r.pos
            for _ in range(n_tensors):
                name = r.string()
                n_dims = r.u32()
                r.need(8 * n_dims)
                dims = [r.u64() for _ in range(n_dims)]
                qtype = c.GGMLQuantizationType(r.u32())
                offset = r.u64()
                block, type_size = c.GGML_QUANT_SIZES[qtype]
                t = TensorEntry(name, dims, qtype.name, offset)
                t.n_bytes = t.n_elements * type_size // block
                tensors.append(t)
            align = meta.get("general.alignment", 32)
            if type(align) is not int or align <= 0:
                raise ValueError(f"general.alignment is {align!r}")
            data_offset = -(-r.pos // align) * align
            for t in tensors:
                if data_offset + t.offset + t.n_bytes > r.size:
                    raise ValueError(f"tensor {t.name!r} lies past the end of the file (truncated?)")
        # OverflowError: a length field too large to slice with (fuzzing found it).
        # RecursionError: arrays nested thousands deep.
        except (struct.error, ValueError, KeyError, OverflowError, RecursionError) as e:
            raise GGUFError(f"{p} is not a readable GGUF file ({type(e).__name__}: {e}); it may be truncated "
                            "or corrupt.", hint="Re-download or re-convert it.") from e
        return GGUFHeader(str(p), r.size, data_offset, align, meta, lengths, tensors, version, keys, table_offset)


def tensor_arrays(path: str | Path) -> dict[str, tuple[TensorEntry, Any]]:
    """{name: (entry, data)} of every tensor, memory-mapped, laid out as gguf-py's reader gives it (float types
    as floats in numpy order, quantized ones as uint8 rows for ``gguf.quants.dequantize``), without gguf-py's
    reader: it parses every vocabulary string into numpy views, seconds per file."""
    import numpy as np

    h = read_header(path)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    floats: dict[str, Any] = {"F32": np.float32, "F16": np.float16, "F64": np.float64}  # BF16: no numpy type
    out = {}
    for t in h.tensors:
        raw = data[h.data_offset_bytes + t.offset: h.data_offset_bytes + t.offset + t.n_bytes]
        rows = t.shape[1:][::-1]
        if t.type in floats:
            arr = raw.view(floats[t.type]).reshape(*rows, t.shape[0])
        else:
            arr = raw.reshape(*rows, t.n_bytes // max(1, math.prod(rows)))
        out[t.name] = (t, arr)
    return out
