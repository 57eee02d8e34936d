"""The transformers tokenizers of llama.cpp's vocab-only GGUFs, read once per test run (tests and benchmarks)."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from edgeq import config

# Where vocab_tokenizer keeps each vocabulary's tokenizer once read (conftest: under the machine's edgeq cache, beside
# the builds, so a fresh clone reads none again; unset: read in each process).
VOCAB_CACHE_ENV = "EDGEQ_TEST_VOCAB_CACHE"


def cache_root() -> Path:
    """The saved tokenizers' folder on this machine: ``$EDGEQ_CACHE`` (default ~/.cache/edgeq) / test-vocab."""
    import os

    return Path(os.environ.get("EDGEQ_CACHE") or Path.home() / ".cache" / "edgeq") / "test-vocab"


def _key(vocab_file: Path) -> str:
    """The GGUF's content and the versions of the code that rebuilt the tokenizer from it: a new pin or a new
    transformers reads the vocabulary again."""
    import hashlib
    from importlib.metadata import version

    h = hashlib.sha256(vocab_file.read_bytes())
    h.update(f"transformers {version('transformers')} tokenizers {version('tokenizers')}".encode())
    return h.hexdigest()[:16]


@functools.cache
def vocab_tokenizer(vocab: str) -> Any:
    """The transformers tokenizer of llama.cpp's ``ggml-vocab-<vocab>.gguf``, read once per machine.

    Reading a GGUF vocabulary rebuilds the tokenizer from its merges, which takes 10-30 s for the 128k-150k BPE
    vocabularies (nine cases share Llama 3's); a saved one loads in about a second.  It is saved under
    ``$EDGEQ_TEST_VOCAB_CACHE/<vocab>-<key>`` (``_key``: the GGUF's bytes and the versions that read it), whole or
    not at all (written beside, then renamed).  Callers save it (``save_pretrained``) and never change it.
    """
    import os
    import shutil

    import transformers

    from edgeq.files import folder_lock

    vocab_file = config.llama_dir() / "models" / f"ggml-vocab-{vocab}.gguf"
    root = os.environ.get(VOCAB_CACHE_ENV)
    if not root:
        return transformers.AutoTokenizer.from_pretrained(vocab_file.parent, gguf_file=vocab_file.name)
    Path(root).mkdir(parents=True, exist_ok=True)
    saved = Path(root) / f"{vocab}-{_key(vocab_file)}"
    with folder_lock(Path(root), doing=f"reads the {vocab} vocabulary"):
        if not (saved / "tokenizer_config.json").is_file():
            tok = transformers.AutoTokenizer.from_pretrained(vocab_file.parent, gguf_file=vocab_file.name)
            part = saved.with_name(saved.name + ".part")
            shutil.rmtree(part, ignore_errors=True)  # a run killed while saving
            tok.save_pretrained(part)
            part.rename(saved)
            return tok
    return transformers.AutoTokenizer.from_pretrained(saved)
