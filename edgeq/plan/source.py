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
from .spec import ModelSpec, TensorSpec


def from_gguf(path: Path, source: str | None = None) -> ModelSpec:
    h = read_header(path)
    m = h.metadata
    arch = str(m.get("general.architecture", "unknown"))

    def key(k: str, default: int = 0) -> int:
        v = m.get(f"{arch}.{k}", default)
        return int(v[0] if isinstance(v, list) else v)

    n_embd, n_head = key("embedding_length"), key("attention.head_count")
    hd = n_embd // max(1, n_head)
    n_vocab = key("vocab_size") or h.array_lengths.get("tokenizer.ggml.tokens", 0)
    tensors = [TensorSpec(t.name, t.shape, "F32" if len(t.shape) < 2 or t.type == "F32" else "F16")
               for t in h.tensors]
    window = key("attention.sliding_window") or None
    return ModelSpec(
        name=str(m.get("general.name") or path.stem), source=source or str(path), kind="gguf", arch=arch,
        n_layer=key("block_count"), n_embd=n_embd, n_head=n_head, n_head_kv=key("attention.head_count_kv", n_head),
        head_dim_k=key("attention.key_length", hd), head_dim_v=key("attention.value_length", hd),
        n_ff=key("feed_forward_length"), n_vocab=n_vocab, ctx_train=key("context_length") or None,
        sliding_window=window, swa_layers=key("block_count") // 2 if window and arch.startswith("gemma2") else 0,
        metadata_bytes=h.data_offset_bytes - _table_bytes(tensors), alignment=h.alignment, tensors=tensors,
        files={file_type_name(m.get("general.file_type")) or "unknown": str(path)}, current_types=[t.type for t in h.tensors])


def _table_bytes(tensors: list[TensorSpec]) -> int:
    return sum(8 + len(t.name.encode()) + 4 + 8 * len(t.shape) + 4 + 8 for t in tensors)


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
