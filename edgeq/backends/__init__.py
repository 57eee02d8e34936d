"""Inference backends: the only modules that import llama_cpp, torch or bitsandbytes.

Each role has one small Protocol that llama.cpp and transformers both implement:
``Runner`` (bench: prompt processing and greedy generation of B sequences) and
``Scorer`` (eval: logits for every position of a token sequence).
"""
from __future__ import annotations

from typing import Any, Protocol


class Runner(Protocol):
    def tokenize(self, text: str) -> list[int]: ...

    def run(self, prompts: list[list[int]], n_gen: int) -> tuple[float, float, list[list[int]]]:
        """(prompt seconds, generation seconds, generated tokens per sequence)."""
        ...

    def decode(self, tokens: list[int]) -> str: ...

    def peak_gpu_bytes(self) -> int | None: ...


class Scorer(Protocol):
    kind: str
    n_vocab: int
    adds_bos: bool
    bos_id: int

    def tokenize(self, text: str, add_bos: bool | None = None) -> list[int]: ...

    def logits(self, tokens: list[int], *, reuse_prefix: bool = False) -> Any:
        """float32 array (len(tokens), n_vocab)."""
        ...

    def close(self) -> None: ...
