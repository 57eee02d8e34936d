"""Read a GGUF file's header and tensor table: ``struct`` over an mmap, never the tensor data.

gguf-py's ``GGUFReader`` builds numpy views of every vocabulary entry and merge,
which takes seconds on a 150k-token vocabulary (profiled: most of `edgeq
inspect`'s 11.5 s on a Qwen2.5-0.5B Q8_0).  This reader skips long string arrays
by their lengths alone, so any header reads in milliseconds; the one file
that describes the format stays gguf-py's ``constants`` (the type table and
block sizes), loaded without the package, whose ``__init__`` pulls in numpy
and the reader and writer.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import SourceError
from .gguf_header import SHOWN_ITEMS, GGUFHeader, TensorEntry, gguf_constants, read_header
from .sentence import EmbeddingHead, gguf_head

# Metadata worth showing; the tokenizer vocab arrays are far too long.
_SKIP_PREFIXES = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                  "tokenizer.ggml.scores", "tokenizer.chat_template")


class _Tensor(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> list[int]: ...


def ties_output(tensors: Sequence[_Tensor]) -> bool:
    """The model has no ``output.weight``: its token embedding is also the output matrix (tied)."""
    return not any(t.name == "output.weight" for t in tensors)


def bytes_read_per_token(tensors: Sequence[_Tensor], n_bytes: Sequence[int]) -> list[int]:
    """Bytes of each tensor that generating one token reads (ggml order: ``shape[-1]`` is the row count).

    Every weight is read once, except the token embedding, of which one row is looked
    up, unless the model has no ``output.weight``: then the embedding is also the
    output matrix and is read whole.  The roofline (bench) and the plan's speed both use this rule.
    """
    tied = ties_output(tensors)
    return [b // max(1, t.shape[-1]) if t.name == "token_embd.weight" and not tied else b
            for t, b in zip(tensors, n_bytes)]


@dataclass
class TensorTypeShare:
    tensors: int
    parameters: int
    bytes: int


@dataclass
class GGUFInfo:
    path: str
    file_size_bytes: int
    architecture: str
    name: str | None
    parameters: int
    bits_per_weight: float
    file_type: str | None
    context_length: int | None
    embedding_length: int | None
    block_count: int | None
    tokenizer_model: str | None
    add_bos_token: bool | None
    tensor_count: int
    tensor_types: dict[str, TensorTypeShare] = field(default_factory=dict)
    bytes_per_token: int = 0  # weights read to generate one token (``bytes_read_per_token``)
    metadata: dict[str, Any] = field(default_factory=dict)
    # A sentence-embedding model's head (``sources.sentence``): pooling, normalize, dimension, max_seq_length.
    embedding: EmbeddingHead | None = None

    def share_of(self, *types: str) -> float:
        """Fraction of parameters stored in any of ``types``."""
        n = sum(s.parameters for t, s in self.tensor_types.items() if t in types)
        return n / self.parameters if self.parameters else 0.0


def read(path: str | Path) -> GGUFInfo:
    """Return a summary of a GGUF file (what `edgeq inspect` shows); raise ``GGUFError`` if it is not a whole GGUF."""
    h = read_header(path)
    types: dict[str, list[int]] = {}
    counts: Counter[str] = Counter()
    for t in h.tensors:
        agg = types.setdefault(t.type, [0, 0])
        agg[0] += t.n_elements
        agg[1] += t.n_bytes
        counts[t.type] += 1
    n_params = sum(v[0] for v in types.values())
    n_bytes = sum(v[1] for v in types.values())
    meta = {k: _shown(h.metadata[k]) if k in h.metadata else f"[{h.array_lengths[k]} items]"
            for k in h.keys if not k.startswith(_SKIP_PREFIXES)}
    arch = str(meta.get("general.architecture") or "unknown")
    return GGUFInfo(
        path=str(path),
        file_size_bytes=h.file_size_bytes,
        architecture=arch,
        name=_str(meta.get("general.name")),
        parameters=n_params,
        bits_per_weight=round(8 * n_bytes / n_params, 3) if n_params else 0.0,
        file_type=file_type_name(meta.get("general.file_type")),
        context_length=_int(meta.get(f"{arch}.context_length")),
        embedding_length=_int(meta.get(f"{arch}.embedding_length")),
        block_count=_int(meta.get(f"{arch}.block_count")),
        tokenizer_model=_str(meta.get("tokenizer.ggml.model")),
        add_bos_token=_bool(meta.get("tokenizer.ggml.add_bos_token")),
        tensor_count=len(h.tensors),
        bytes_per_token=sum(bytes_read_per_token(h.tensors, [t.n_bytes for t in h.tensors])),
        tensor_types={k: TensorTypeShare(counts[k], v[0], v[1])
                      for k, v in sorted(types.items(), key=lambda kv: -kv[1][0])},
        metadata=meta,
        embedding=gguf_head(h.metadata),
    )


# GGUF architectures of encoders (llama.cpp computes embeddings with them, never a next token): gguf-py's
# MODEL_ARCH_NAMES for BERT and its descendants, and T5's encoder half.
ENCODER_ARCHS = frozenset({"bert", "modern-bert", "nomic-bert", "nomic-bert-moe", "neo-bert", "jina-bert-v2",
                           "jina-bert-v3", "eurobert", "t5encoder"})
# Diffusion language models: they unmask a whole sequence at once (llama.cpp's llama-diffusion-cli), with
# attention that is not causal; the converter writes them so whatever their config says.
DIFFUSION_ARCHS = frozenset({"dream", "llada", "llada-moe", "rnd1"})
POOLING = {1: "mean", 2: "CLS", 3: "last-token", 4: "rank"}  # gguf-py's PoolingType (0 is none)


def not_a_generator(arch: str, metadata: dict[str, Any]) -> str | None:
    """Why a model of GGUF architecture ``arch`` with ``metadata`` cannot generate text (one phrase), or None.

    An encoder, or a model whose attention is not causal (diffusion models too), or one converted with a
    pooling layer and no causal attention (a sentence-embedding model): llama.cpp's generator aborts on such
    a model mid-run, which looked like a crash of this machine's CPU."""
    causal = metadata.get(f"{arch}.attention.causal")
    pooling = metadata.get(f"{arch}.pooling_type")
    pooled = f", {POOLING[pooling]} pooling" if pooling in POOLING else ""
    if arch in ENCODER_ARCHS:
        return f"an encoder (architecture {arch!r}{pooled}): an embedding model, not a text generator"
    if arch in DIFFUSION_ARCHS:
        return (f"a diffusion language model (architecture {arch!r}), which llama.cpp runs with llama-diffusion-cli, "
                "not as a next-token generator")
    if causal is False:
        return f"a model whose attention is not causal (architecture {arch!r}{pooled}), not a next-token generator"
    if pooling in POOLING and causal is not True:
        return f"an embedding model (architecture {arch!r}{pooled}), not a text generator"
    return None


def require_generator(path: Path, doing: str) -> None:
    """Refuse, before anything runs, a GGUF that ``doing`` (e.g. "edgeq bench measures text generation")
    cannot run: one line naming what the model is."""
    h = read_header(path)
    arch = str(h.metadata.get("general.architecture") or "")
    if h.metadata.get("general.type") == "adapter":
        raise SourceError(f"{Path(path).name} is a LoRA adapter, not a model; {doing}.",
                          hint="Pass the base model it was converted against, with --lora ADAPTER.gguf.")
    if arch == PROJECTOR_ARCH:
        raise SourceError(f"{Path(path).name} is a multimodal projector (mmproj), not a model; {doing}.",
                          hint=PROJECTOR_HINT)
    if (why := not_a_generator(arch, h.metadata)) is not None:
        raise SourceError(f"{Path(path).name} is {why}; {doing}.", hint=GENERATOR_HINT)


# A vision-language model's second file (``convert_hf_to_gguf.py --mmproj``): an image encoder for libmtmd.
PROJECTOR_ARCH = "clip"
PROJECTOR_HINT = ("Pass the text model it was converted with (the manifest pairs them; `edgeq inspect` on the "
                  "projector names it), with --image FILE to give it an image.")
GENERATOR_HINT = ("Pass a causal language model (a chat or base LLM); llama.cpp's llama-embedding computes "
                  "an embedding model's vectors.")


def file_type_name(v: object) -> str | None:
    """``general.file_type`` as llama.cpp names it (Q8_0, Q4_K_M, …); None when absent."""
    if not isinstance(v, int) or isinstance(v, bool):
        return None
    try:
        return str(gguf_constants().LlamaFileType(v).name).removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return str(v)


def _shown(v: object) -> object:
    return f"[{len(v)} items]" if isinstance(v, list) and len(v) > SHOWN_ITEMS else v


def _int(v: object) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _str(v: object) -> str | None:
    return v if isinstance(v, str) else None


def _bool(v: object) -> bool | None:
    return v if isinstance(v, bool) else None


__all__ = ["ENCODER_ARCHS", "GENERATOR_HINT", "GGUFHeader", "GGUFInfo", "TensorEntry", "TensorTypeShare",
           "file_type_name", "not_a_generator", "read", "read_header", "require_generator"]
