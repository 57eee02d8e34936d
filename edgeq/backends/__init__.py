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

    def logits(self, tokens: list[int], *, reuse_prefix: bool = False, first: int = 0) -> Any:
        """float32 array (len(tokens) - first, n_vocab): row i predicts the token after tokens[: first + i + 1].

        ``first`` skips rows nobody scores (perplexity scores the second half of
        each window, as llama-perplexity does), so they are neither computed by the
        output layer nor copied.
        """
        ...

    def close(self) -> None: ...
