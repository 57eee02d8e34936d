"""What a plan knows about a model: its shapes and tensors (``ModelSpec``), read from headers only."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..sources.gguf_header import GGUFHeader, tensor_table_bytes

# Bytes of GGUF metadata besides the vocabulary: ~40 keys and their names.
FIXED_METADATA_BYTES = 2048
# Per vocabulary entry when only the size is known: a token string, its type and a merge (SmolLM2: 36).
METADATA_BYTES_PER_TOKEN = 36


@dataclass
class TensorSpec:
    name: str  # GGUF name (token_embd.weight, blk.0.attn_v.weight, …)
    shape: list[int]  # ggml order: shape[0] is the row length
    base_type: str = "F16"  # type in the float GGUF that quants are made from

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class ModelSpec:
    name: str
    source: str  # what the user passed
    kind: str  # gguf | gguf-folder | hf-folder | hub | family
    arch: str  # llama.cpp architecture name (llama, qwen2, gemma2, …)
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_ff: int
    n_vocab: int
    ctx_train: int | None = None
    sliding_window: int | None = None  # tokens, for the layers that use it
    swa_layers: int = 0  # how many layers attend through the window
    n_expert: int = 0  # experts per MoE layer (llama-quantize's recipes change at 4 and 8)
    metadata_bytes: int = 0  # GGUF key/value section, mostly the vocabulary
    alignment: int = 32
    tensors: list[TensorSpec] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # quant -> existing GGUF path
    current_types: list[str] = field(default_factory=list)  # a GGUF source's own tensor types
    # Files of no stock recipe (`edgeq tune`'s): label -> each tensor's type as the file has it, in tensors' order.
    recipes: dict[str, list[str]] = field(default_factory=dict)
    recipe_metadata_bytes: dict[str, int] = field(default_factory=dict)  # their own headers (imatrix keys and all)

    @property
    def parameters(self) -> int:
        return sum(t.n_elements for t in self.tensors)


def from_header(h: GGUFHeader, *, name: str, source: str, kind: str) -> ModelSpec:
    """A spec from a GGUF header: a file's, or the one the converter would write for a checkpoint."""
    m = h.metadata
    arch = str(m.get("general.architecture", "unknown"))

    def key(k: str, default: int = 0) -> int:
        v = m.get(f"{arch}.{k}", default)
        if isinstance(v, list):  # per-layer arrays (hybrid models: 0 for their recurrent layers): the largest
            v = max((int(x) for x in v), default=0)
        return int(v or 0)

    n_embd, n_head = key("embedding_length"), key("attention.head_count")
    hd = n_embd // max(1, n_head)
    n_vocab = key("vocab_size") or h.array_lengths.get("tokenizer.ggml.tokens", 0)
    tensors = [TensorSpec(t.name, t.shape, "F32" if len(t.shape) < 2 or t.type == "F32" else "F16") for t in h.tensors]
    window = key("attention.sliding_window") or None
    return ModelSpec(
        name=name, source=source, kind=kind, arch=arch,
        n_layer=key("block_count"), n_embd=n_embd, n_head=n_head, n_head_kv=key("attention.head_count_kv", n_head),
        head_dim_k=key("attention.key_length", hd), head_dim_v=key("attention.value_length", hd),
        n_ff=key("feed_forward_length"), n_vocab=n_vocab, ctx_train=key("context_length") or None,
        sliding_window=window, swa_layers=key("block_count") // 2 if window and arch.startswith("gemma2") else 0,
        n_expert=key("expert_count"), metadata_bytes=h.data_offset_bytes - tensor_table_bytes(tensors),
        alignment=h.alignment, tensors=tensors)
