"""What the parent asks an embedding worker (``worker``): one request, one JSON object each way."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Request:
    op: str  # "embed" | "bench"
    backend: str  # "llama.cpp" | "sentence-transformers"
    path: str  # the GGUF, or the checkpoint folder
    variant: str  # the GGUF's type, or fp32 / bf16 / bnb-int8
    texts: list[str]
    threads: int
    normalize: bool = False  # llama.cpp: apply the L2 normalisation the model declares
    max_seq_length: int | None = None
    batches: list[int] = field(default_factory=lambda: [1])  # bench: texts per call
    reps: int = 3  # bench: timed passes over the texts per batch size, after one warm-up
