"""What a plan needs to know about a model, read from headers only: never a weight.

``load`` resolves the argument (``sources.resolve``, without downloading weights)
and reads a GGUF's header, a folder of GGUFs, or an HF checkpoint's headers
(``hf``); a family's config numbers come from ``families``.
"""
from __future__ import annotations

from pathlib import Path

from .. import config, manifest
from ..errors import UsageError
from ..quants import QUANT_TYPES
from ..sources import resolve
from ..sources.gguf import file_type_name, read_header
from ..sources.gguf_header import tensor_table_bytes
from .hf import from_hf_folder, from_hub
from .spec import ModelSpec, from_header


def from_gguf(path: Path, source: str | None = None) -> ModelSpec:
    h = read_header(path)
    spec = from_header(h, name=str(h.metadata.get("general.name") or path.stem), source=source or str(path), kind="gguf")
    spec.current_types = [t.type for t in h.tensors]
    label = tuned_label(path)
    if label:  # a tuned file: its types are its recipe's, which no stock type name replays
        spec.files, spec.recipes = {label: str(path)}, {label: list(spec.current_types)}
        spec.recipe_metadata_bytes = {label: spec.metadata_bytes}
    else:
        spec.files = {file_type_name(h.metadata.get("general.file_type")) or "unknown": str(path)}
    return spec


def tuned_label(path: Path) -> str | None:
    """``tuned-4.91bpw`` when the folder's manifest says ``edgeq tune`` made this file."""
    mf = manifest.load(path.parent) if (path.parent / config.MANIFEST_NAME).is_file() else None
    tuned = (mf.options.get("tuned") or {}) if mf else {}
    rec = mf.files.get(path.name) if mf else None
    return rec.type if rec is not None and isinstance(tuned, dict) and path.name in tuned else None


def from_gguf_folder(folder: Path, source: str) -> ModelSpec:
    """One file's header describes them all; files named ``<stem>-<QUANT>.gguf`` give measured sizes."""
    files = sorted(f for f in folder.glob("*.gguf") if not f.name.startswith("mmproj-"))  # projectors: .vision
    named = {f.stem.rsplit("-", 1)[-1].upper(): f for f in files}
    named = {q: f for q, f in named.items() if q in QUANT_TYPES}
    spec = from_gguf(next(iter(named.values()), files[0]), source)
    spec.kind = "gguf-folder"
    spec.files = {q: str(f) for q, f in named.items()}
    spec.recipes, spec.recipe_metadata_bytes = {}, {}
    for f in files:
        if (label := tuned_label(f)) is not None:
            h = read_header(f)
            types = {t.name: t.type for t in h.tensors}  # llama-quantize writes them in its own order
            if set(types) == {t.name for t in spec.tensors}:
                spec.files[label], spec.recipes[label] = str(f), [types[t.name] for t in spec.tensors]
                spec.recipe_metadata_bytes[label] = h.data_offset_bytes - tensor_table_bytes(h.tensors)
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
    if src.kind == "adapter":
        raise UsageError(f"{label} is a LoRA adapter, not a model: plan its base model.",
                         hint="An adapter adds little memory; `edgeq convert BASE --lora ADAPTER` writes its GGUF.")
    return from_hf_folder(src.path, label)
