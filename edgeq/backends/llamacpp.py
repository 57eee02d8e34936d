"""llama.cpp through llama-cpp-python, on our own build of libllama."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..gguf_info import read as read_gguf
from ..toolchain import use_our_libllama


@contextlib.contextmanager
def load(model_path: str | Path, *, n_ctx: int = 512, n_threads: int | None = None, seed: int = 0,
         n_gpu_layers: int = 0, **kwargs: Any) -> Iterator[Any]:
    """Open a GGUF with ``llama_cpp.Llama`` (after a header check, so a bad file is a clear error)."""
    read_gguf(model_path)
    use_our_libllama()
    from llama_cpp import Llama

    llm = Llama(model_path=str(model_path), n_ctx=n_ctx, n_threads=n_threads or os.cpu_count(), seed=seed,
                n_gpu_layers=n_gpu_layers, verbose=False, **kwargs)
    try:
        yield llm
    finally:
        llm.close()


def greedy(model_path: str | Path, prompt: str, max_tokens: int = 16, **kwargs: Any) -> str:
    """Greedy continuation of ``prompt``: deterministic, for smoke tests and comparisons."""
    with load(model_path, **kwargs) as llm:
        out = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, top_k=1)
    return str(out["choices"][0]["text"])
