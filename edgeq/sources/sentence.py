"""What makes a checkpoint or a GGUF a sentence-embedding model: its pooling, normalisation and dimension.

A sentence-transformers checkpoint declares them in ``modules.json`` (a Transformer, a ``Pooling`` module with
``1_Pooling/config.json``, often a ``Normalize`` module) and ``sentence_bert_config.json`` (``max_seq_length``).
The vendored converter writes ``{arch}.pooling_type`` (mean, CLS, last token) but nothing of the Normalize
module or of the sequence length the model was trained to see, so ``convert`` adds them under ``edgeq.embedding``
(``KEY_NORMALIZE``, ``KEY_MAX_SEQ``): eval compares with sentence-transformers under the same head, and
a card says how to call the file.  Modules llama.cpp cannot apply (a Dense projection, max pooling) are refused
before conversion, never turned into a file whose vectors differ silently.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SourceError

KEY_NORMALIZE = "edgeq.embedding.normalize"
KEY_MAX_SEQ = "edgeq.embedding.max_seq_length"
POOLING_NAMES = {1: "mean", 2: "cls", 3: "last"}  # gguf-py's PoolingType values the converter writes
POOLING_IDS = {v: k for k, v in POOLING_NAMES.items()}
# 1_Pooling/config.json's flags, as the converter reads them (its _try_set_pooling_type), in its order.
_MODES = (("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls"), ("pooling_mode_lasttoken", "last"))
_UNSUPPORTED_MODES = ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens")
_HINT = ("llama.cpp applies mean, CLS or last-token pooling and an L2 normalisation only: use a model whose "
         "modules.json is Transformer, Pooling (one of those) and optionally Normalize.")


@dataclass(frozen=True)
class EmbeddingHead:
    """How token vectors become one sentence vector: ``pooling`` (mean, cls, last), then an L2 ``normalize``."""

    pooling: str
    normalize: bool
    dimension: int | None  # the sentence vector's length (the model's hidden size)
    max_seq_length: int | None  # tokens the model was trained on; longer texts are cut (sentence-transformers)

    def describe(self) -> str:
        return f"{self.pooling} pooling" + (", L2-normalised" if self.normalize else ", not normalised")


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SourceError(f"{path} cannot be read as JSON ({e}).",
                          hint="Restore the sentence-transformers files from the model's repository.") from None


def checkpoint_head(folder: Path) -> EmbeddingHead | None:
    """The head a sentence-transformers checkpoint declares, or None for a checkpoint without ``modules.json``.

    Raises ``SourceError`` for a head llama.cpp cannot reproduce (Dense, max pooling, several poolings)."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    modules = _read(modules_file)
    if not isinstance(modules, list):
        raise SourceError(f"{modules_file} is not a list of modules.", hint=_HINT)
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules if isinstance(m, dict)]
    pooling_dirs = [str(m.get("path", "")) for m in modules if isinstance(m, dict)
                    and str(m.get("type", "")).endswith("Pooling")]
    if not pooling_dirs:
        return None  # a plain encoder that sentence-transformers wraps: no pooling declared, nothing to carry
    if extra := [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]:
        raise SourceError(f"{folder.name}'s modules.json has a {extra[0]} module after pooling, which llama.cpp "
                          "does not apply: its GGUF's vectors would differ from the model's.", hint=_HINT)
    cfg = _read(folder / pooling_dirs[0] / "config.json")
    if bad := [m for m in _UNSUPPORTED_MODES if cfg.get(m)]:
        raise SourceError(f"{folder.name} pools with {bad[0]}, which llama.cpp does not implement.", hint=_HINT)
    modes = [name for flag, name in _MODES if cfg.get(flag)]
    if not modes and cfg.get("pooling_mode") in ("mean", "cls", "lasttoken"):
        modes = [{"lasttoken": "last"}.get(cfg["pooling_mode"], cfg["pooling_mode"])]
    if len(modes) != 1:
        raise SourceError(f"{folder.name}'s pooling config names {len(modes)} pooling modes ({modes or 'none'}); "
                          "llama.cpp applies exactly one.", hint=_HINT)
    st_cfg = folder / "sentence_bert_config.json"
    max_seq = _read(st_cfg).get("max_seq_length") if st_cfg.is_file() else None
    dim = cfg.get("word_embedding_dimension")
    return EmbeddingHead(modes[0], "Normalize" in kinds, int(dim) if isinstance(dim, int) else None,
                         int(max_seq) if isinstance(max_seq, int) else None)


def gguf_head(metadata: dict[str, Any]) -> EmbeddingHead | None:
    """The head a GGUF's header records (pooling type, edgeq's keys), or None when it pools nothing."""
    arch = str(metadata.get("general.architecture") or "")
    pooling = POOLING_NAMES.get(metadata.get(f"{arch}.pooling_type"))  # type: ignore[arg-type]
    if pooling is None:
        return None
    dim, max_seq = metadata.get(f"{arch}.embedding_length"), metadata.get(KEY_MAX_SEQ)
    return EmbeddingHead(pooling, bool(metadata.get(KEY_NORMALIZE, False)),
                         int(dim) if isinstance(dim, int) else None, int(max_seq) if isinstance(max_seq, int) else None)


def require_same_head(gguf_name: str, file_head: EmbeddingHead | None, ref_head: EmbeddingHead | None) -> None:
    """Fail loudly when a GGUF's head is not its reference's: cosine between vectors pooled two ways measures
    the mismatch, not the quantization."""
    if file_head is None or ref_head is None:
        missing = gguf_name if file_head is None else "the reference checkpoint"
        raise SourceError(f"{missing} declares no sentence-embedding pooling, so its vectors cannot be compared "
                          "with the other's.", hint="Convert the sentence-transformers checkpoint (with its "
                          "modules.json and 1_Pooling/) again with `edgeq convert`.")
    if (file_head.pooling, file_head.normalize) != (ref_head.pooling, ref_head.normalize):
        raise SourceError(f"{gguf_name} has {file_head.describe()} but the reference has {ref_head.describe()}: "
                          "their vectors differ by construction, not by quantization.",
                          hint="Convert the reference checkpoint again with `edgeq convert` (it carries the head "
                               "into the GGUF), or compare with the checkpoint the file was made from.")


__all__ = ["KEY_MAX_SEQ", "KEY_NORMALIZE", "POOLING_IDS", "POOLING_NAMES", "EmbeddingHead", "checkpoint_head",
           "gguf_head", "require_same_head"]
