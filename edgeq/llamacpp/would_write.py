"""The GGUF header the vendored converter *would* write for a checkpoint, without reading a weight.

``plan`` must predict every tensor of a file exactly, for every architecture the converter registers (about
140, each with its own renames, splits, fusions and stackings of HF tensors).  Rather than copy those rules,
edgeq asks the converter: it runs ``convert_hf_to_gguf.py`` in its default lazy mode, where a tensor is only
a recipe until it is written, and stops it at the moment it would open the output file.  By then the
converter has named, shaped and typed every tensor and built every metadata key, and no weight was read, so
the checkpoint's safetensors files may be sparse stand-ins with only their headers (``stub_checkpoint``): this
is how a Hub repo is planned from range requests alone.
"""
from __future__ import annotations

import copy
import functools
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ToolFailed
from ..sources.gguf_header import READ_ITEMS, SHOWN_ITEMS, GGUFHeader, TensorEntry, tensor_table_bytes
from .build import Toolchain, find_toolchain
from .process import run_tool

GGUF_FIXED_HEADER = 24  # magic, version, tensor count, key count

# Run in the child before the converter: refuse remote code (as convert does), and replace the writer's first
# output step with a dump of what it holds.  The converter's outtype is f16, the float file quants start from.
NO_REMOTE_CODE = """
import os, runpy, sys
import transformers.dynamic_module_utils as d
def refuse(*args, **kwargs):
    raise RuntimeError("edgeq: this checkpoint asks transformers to run its own Python code; refused")
d.get_class_from_dynamic_module = d.get_cached_module_file = refuse
d.resolve_trust_remote_code = lambda *args, **kwargs: False
"""
_DUMP = NO_REMOTE_CODE + """
import json
here = os.path.dirname(os.path.abspath(sys.argv[1]))
sys.path.insert(0, here)
if "NO_LOCAL_GGUF" not in os.environ:  # the converter's own rule: the tree's gguf-py before any installed one
    sys.path.insert(1, os.path.join(here, "gguf-py"))
import gguf

def plain(v):
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v

S, A = gguf.GGUFValueType.STRING, gguf.GGUFValueType.ARRAY
LONG = int(os.environ["EDGEQ_DUMP_ITEMS"])

def packed(self, v):
    # len(self._pack_val(v.value, v.type, add_vtype=True, sub_type=v.sub_type)), counted: packing a 150k-token
    # vocabulary string by string took 1.4 s.  Arrays: type, item type, count, then each item as the writer packs it.
    items = v.value
    if v.type != A or isinstance(items, bytes) or not len(items):
        return len(self._pack_val(items, v.type, add_vtype=True, sub_type=v.sub_type))
    item = v.sub_type if v.sub_type is not None else gguf.GGUFValueType.get_type(items[0])
    if item == S:
        return 16 + sum(8 + len(x.encode("utf-8") if isinstance(x, str) else x) for x in items)
    if item in self._simple_value_packing:
        return 16 + len(items) * len(self._pack_val(items[0], item, add_vtype=False))
    return len(self._pack_val(items, v.type, add_vtype=True, sub_type=v.sub_type))

def dump(self, path=None):
    kv = self.kv_data[0]
    kv_bytes = sum(len(self._pack_val(k, S, add_vtype=False)) + packed(self, v) for k, v in kv.items())
    # Arrays longer than the parent keeps go as their length only (a vocabulary's tokens, merges, scores).
    lengths = {k: len(v.value) for k, v in kv.items() if v.type == A}
    out = {"alignment": self.data_alignment, "kv_bytes": kv_bytes, "lengths": lengths,
           "metadata": {k: None if lengths.get(k, 0) > LONG else plain(v.value) for k, v in kv.items()},
           "tensors": [[n, [int(x) for x in reversed(ti.shape)], gguf.GGMLQuantizationType(ti.dtype).name]
                       for part in self.tensors for n, ti in part.items()]}
    with open(os.environ["EDGEQ_DUMP"], "w", encoding="utf-8") as f:
        json.dump(out, f)
    os._exit(0)

gguf.GGUFWriter.write_header_to_file = dump
sys.argv = [sys.argv[1], sys.argv[2], "--outtype", "f16", "--outfile", os.devnull]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def converter_header(folder: Path, tc: Toolchain | None = None) -> GGUFHeader:
    """The F16 GGUF header ``convert_hf_to_gguf.py`` would write for ``folder`` (no data offsets, no file).

    Asked once per folder state in a process: a plan of six quants reads it once, not six times (~5 s each)."""
    tc = tc or find_toolchain(need_build=False)  # the converter is Python: no compiled tool is needed
    state = tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir() if p.is_file()))
    return copy.deepcopy(_converter_header(folder.resolve(), state, tc.converter))


@functools.lru_cache(maxsize=8)
def _converter_header(folder: Path, state: tuple[tuple[str, int, int], ...], converter: Path) -> GGUFHeader:
    with tempfile.TemporaryDirectory(prefix="edgeq-header-") as tmp:
        dump = Path(tmp) / "header.json"
        run_tool([sys.executable, "-c", _DUMP, converter, folder], name="convert_hf_to_gguf.py",
                 env={"EDGEQ_DUMP": str(dump), "EDGEQ_DUMP_ITEMS": str(READ_ITEMS)})
        if not dump.is_file():  # the converter ended without reaching the writer (vocab-only, an early exit)
            raise ToolFailed("convert_hf_to_gguf.py", 0, "ended before it would write a file")
        data = json.loads(dump.read_text(encoding="utf-8"))
    return _header(folder, data)


def _header(folder: Path, data: dict[str, Any]) -> GGUFHeader:
    meta: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    for k, v in data["metadata"].items():
        if k in data["lengths"]:  # as sources.gguf_header keeps arrays: short ones, and every length
            lengths[k] = int(data["lengths"][k])
            strings = bool(v) and isinstance(v[0], str)
            if v is not None and len(v) <= (SHOWN_ITEMS if strings else READ_ITEMS):
                meta[k] = v
        else:
            meta[k] = v
    tensors = [TensorEntry(n, shape, ty) for n, shape, ty in data["tensors"]]
    table = tensor_table_bytes(tensors)
    align = int(data["alignment"])
    offset = -(-(GGUF_FIXED_HEADER + int(data["kv_bytes"]) + table) // align) * align
    return GGUFHeader(path=str(folder), file_size_bytes=0, data_offset_bytes=offset, alignment=align,
                      metadata=meta, array_lengths=lengths, tensors=tensors, keys=list(data["metadata"]))


def stub_checkpoint(dest: Path, files: dict[str, Path], safetensors: dict[str, dict[str, Any]]) -> Path:
    """A checkpoint folder the converter can read lazily: the small files as they are (config, tokenizer) and
    each safetensors file as its header followed by a hole of the right size (sparse: no disk is used).

    ``safetensors`` maps a file name to its header: ``{tensor: {"dtype", "shape", "data_offsets"}}``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        shutil.copyfile(src, dest / name)
    for name, header in safetensors.items():
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the format aligns the data section to 8 bytes
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
        with open(dest / name, "wb") as f:
            f.write(len(raw).to_bytes(8, "little") + raw)
            f.truncate(8 + len(raw) + end)
    return dest
