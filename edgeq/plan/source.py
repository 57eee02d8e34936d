"""What a plan needs to know about a model, read from headers only: never a weight.

``load`` resolves the argument (``sources.resolve``, without downloading weights)
and reads a GGUF's header, a folder of GGUFs, or an HF checkpoint's headers
(``hf``); a family's config numbers come from ``families``.
"""
from __future__ import annotations

from pathlib import Path

from ..quants import QUANT_TYPES
from ..sources import resolve
from ..sources.gguf import file_type_name, read_header
from .hf import from_hf_folder, from_hub
from .spec import ModelSpec, from_header


def from_gguf(path: Path, source: str | None = None) -> ModelSpec:
    h = read_header(path)
    spec = from_header(h, name=str(h.metadata.get("general.name") or path.stem), source=source or str(path), kind="gguf")
    spec.files = {file_type_name(h.metadata.get("general.file_type")) or "unknown": str(path)}
    spec.current_types = [t.type for t in h.tensors]
    return spec


def from_gguf_folder(folder: Path, source: str) -> ModelSpec:
    """One file's header describes them all; files named ``<stem>-<QUANT>.gguf`` give measured sizes."""
    files = sorted(folder.glob("*.gguf"))
    named = {f.stem.rsplit("-", 1)[-1].upper(): f for f in files}
    named = {q: f for q, f in named.items() if q in QUANT_TYPES}
    spec = from_gguf(next(iter(named.values()), files[0]), source)
    spec.kind = "gguf-folder"
    spec.files = {q: str(f) for q, f in named.items()}
    return spec


def load(source: str | None, *, revision: str | None = None, token: str | None = None) -> ModelSpec:
    """A ModelSpec for a GGUF file, a folder (an HF checkpoint or GGUFs) or a Hub repo id (None: the embedded model)."""
    src = resolve(source, revision=revision, token=token, fetch=False)
    label = source or str(src.path)
    if src.kind == "hub":
        return from_hub(src, token=token)
    assert src.path is not None  # every kind but hub is a local path
    if src.kind == "gguf":
        return from_gguf(src.path, label)
    if src.kind == "gguf-folder":
        return from_gguf_folder(src.path, label)
    return from_hf_folder(src.path, label)
