"""The transformers tokenizers of llama.cpp's vocab-only GGUFs, read once per test run (tests and benchmarks)."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from edgeq import config

# Where vocab_tokenizer keeps each vocabulary's tokenizer once read (the test run's folder, which every pytest-xdist
# worker shares; unset: read in each process).
VOCAB_CACHE_ENV = "EDGEQ_TEST_VOCAB_CACHE"


@functools.cache
def vocab_tokenizer(vocab: str) -> Any:
    """The transformers tokenizer of llama.cpp's ``ggml-vocab-<vocab>.gguf``, read once per test run.

    Reading a GGUF vocabulary rebuilds the tokenizer from its merges, which takes 10-30 s for the 128k-150k BPE
    vocabularies (nine cases share Llama 3's); a saved one loads in about a second.  Callers save it
    (``save_pretrained``) and never change it.
    """
    import os

    import transformers

    from edgeq.files import folder_lock

    vocab_file = config.llama_dir() / "models" / f"ggml-vocab-{vocab}.gguf"
    root = os.environ.get(VOCAB_CACHE_ENV)
    if not root:
        return transformers.AutoTokenizer.from_pretrained(vocab_file.parent, gguf_file=vocab_file.name)
    Path(root).mkdir(parents=True, exist_ok=True)
    saved = Path(root) / vocab
    with folder_lock(Path(root), doing=f"reads the {vocab} vocabulary"):
        if not (saved / "tokenizer_config.json").is_file():
            tok = transformers.AutoTokenizer.from_pretrained(vocab_file.parent, gguf_file=vocab_file.name)
            tok.save_pretrained(saved)
            return tok
    return transformers.AutoTokenizer.from_pretrained(saved)
