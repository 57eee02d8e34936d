"""What a plan knows about a model: its shapes and tensors (``ModelSpec``), read from headers only."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

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
    metadata_bytes: int = 0  # GGUF key/value section, mostly the vocabulary
    alignment: int = 32
    tensors: list[TensorSpec] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # quant -> existing GGUF path
    current_types: list[str] = field(default_factory=list)  # a GGUF source's own tensor types

    @property
    def parameters(self) -> int:
        return sum(t.n_elements for t in self.tensors)
