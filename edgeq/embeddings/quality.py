"""`edgeq eval embeddings`: each GGUF's sentence vectors against sentence-transformers' in fp32.

On one set of texts (``texts.corpus``): the cosine similarity of each text's vector with the reference's (mean
and worst), and retrieval agreement — for every query, its ``k`` nearest passages by cosine, compared with the
reference's ``k``: the share they have in common, and how often the nearest is the same.  The reference
applies the checkpoint's own modules (Transformer, Pooling, Normalize); each file, the head its header records,
which must be the same (``models.require_same_head``).  A float file (F32, F16, BF16) whose worst cosine is
under ``FLOAT_MIN_COSINE`` fails loudly: at float precision only a different computation (pooling,
normalisation, tokenizer, truncation) can make vectors disagree that much.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .._version import __version__
from ..errors import EdgeqError
from ..sources.gguf import read
from ..system import default_threads, system_info
from .models import EmbeddingModels, ask_worker, resolve_models
from .protocol import Request
from .texts import DEFAULT_K, DEFAULT_PASSAGES, DEFAULT_QUERIES, Corpus, corpus

SCHEMA = "edgeq-eval-embeddings/1"
FLOAT_TYPES = ("F32", "F16", "BF16")
FLOAT_MIN_COSINE = 0.999  # F16 agrees to rounding (benchmarks/results/embeddings.json); a different head, by far less
DEFAULT_QUANTS = ("F16", "Q8_0", "Q4_K_M")


@dataclass
class EmbeddingQuality:
    label: str  # "F16 (GGUF)", "bf16 (sentence-transformers)"
    backend: str
    variant: str
    path: str
    size_bytes: int | None
    bits_per_weight: float | None
    cos_mean: float
    cos_min: float
    top1_agreement: float  # share of queries whose nearest passage is the reference's
    topk_agreement: float  # mean share of the reference's k nearest passages among the file's k
    seconds: float


@dataclass
class EmbeddingEval:
    schema: str
    model: str
    reference: dict[str, Any]  # path, backend, variant, head
    texts: dict[str, Any]  # source, queries, passages, k
    rows: list[EmbeddingQuality] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    edgeq_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_embeddings(models: list[str], *, quants: list[str] | tuple[str, ...] = DEFAULT_QUANTS,
                        hf_variants: list[str] | tuple[str, ...] = (), reference: str | None = None,
                        n_queries: int = DEFAULT_QUERIES, n_passages: int = DEFAULT_PASSAGES, k: int = DEFAULT_K,
                        threads: int | None = None, progress: bool = True, revision: str | None = None,
                        token: str | None = None) -> EmbeddingEval:
    """Cosine and retrieval agreement of every file (and sentence-transformers ``hf_variants``) against fp32."""
    em = resolve_models(models, [q.upper() for q in quants], reference=reference, progress=progress,
                        revision=revision, token=token)
    if em.reference is None:
        raise EdgeqError("no sentence-transformers checkpoint to compare with.",
                         hint="Pass --reference with the checkpoint folder the GGUFs were made from.")
    threads = threads or default_threads()
    texts = corpus(n_queries, n_passages)
    req = Request(op="embed", backend="sentence-transformers", path=str(em.reference), variant="fp32",
                  texts=texts.texts, threads=threads, max_seq_length=em.head.max_seq_length, batches=[16])
    ref = _vectors(ask_worker(req, "embedding the texts in fp32 (the reference)"))
    res = EmbeddingEval(SCHEMA, em.name, {"path": str(em.reference), "backend": "sentence-transformers",
                                          "variant": "fp32", "head": asdict(em.head)},
                        {"source": texts.source, "queries": len(texts.queries), "passages": len(texts.passages),
                         "k": k}, environment={"cpu": system_info().cpu, "threads": threads})
    for f in em.files:
        t0 = time.perf_counter()
        rep = ask_worker(replace(req, backend="llama.cpp", path=str(f.path), variant=f.label,
                                 normalize=f.head.normalize), f"embedding the texts with {f.path.name}")
        info = read(f.path)
        res.rows.append(_row(f"{f.label} (GGUF)", "llama.cpp", f.label, str(f.path), info.file_size_bytes,
                             info.bits_per_weight, _vectors(rep), ref, texts, k, time.perf_counter() - t0))
    for v in hf_variants:
        if v == "fp32":
            continue
        t0 = time.perf_counter()
        rep = ask_worker(replace(req, variant=v), f"embedding the texts in {v}")
        res.rows.append(_row(f"{v} (sentence-transformers)", "sentence-transformers", v, str(em.reference), None,
                             None, _vectors(rep), ref, texts, k, time.perf_counter() - t0))
    _refuse_float_mismatch(res, em)
    return res


def _vectors(reply: dict[str, Any]) -> Any:
    import numpy as np

    return np.asarray(reply["vectors"], dtype=np.float64)


def cosines(a: Any, b: Any) -> Any:
    """Row-wise cosine similarity of two equally shaped matrices."""
    import numpy as np

    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def neighbours(vectors: Any, n_queries: int, k: int) -> Any:
    """For each query (the first ``n_queries`` rows), the indices of its ``k`` nearest passages by cosine."""
    import numpy as np

    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-30)
    sims = unit[:n_queries] @ unit[n_queries:].T
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def agreement(mine: Any, ref: Any) -> tuple[float, float]:
    """(top-1 agreement, mean top-k overlap) of two neighbour tables."""
    top1 = float((mine[:, 0] == ref[:, 0]).mean())
    k = ref.shape[1]
    overlap = [len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(mine, ref)]
    return top1, float(sum(overlap) / len(overlap))


def _row(label: str, backend: str, variant: str, path: str, size: int | None, bpw: float | None, vec: Any, ref: Any,
         texts: Corpus, k: int, seconds: float) -> EmbeddingQuality:
    if vec.shape != ref.shape:
        raise EdgeqError(f"{label} gives vectors of shape {vec.shape}, the reference {ref.shape}.",
                         hint="Compare files made from the same checkpoint.")
    cos = cosines(vec, ref)
    nq = len(texts.queries)
    top1, topk = agreement(neighbours(vec, nq, k), neighbours(ref, nq, k))
    return EmbeddingQuality(label, backend, variant, path, size, bpw, round(float(cos.mean()), 7),
                            round(float(cos.min()), 7), round(top1, 4), round(topk, 4), round(seconds, 2))


def _refuse_float_mismatch(res: EmbeddingEval, em: EmbeddingModels) -> None:
    for r in res.rows:
        if r.backend == "llama.cpp" and r.variant in FLOAT_TYPES and r.cos_min < FLOAT_MIN_COSINE:
            raise EdgeqError(f"{r.label}'s vectors disagree with sentence-transformers fp32 (worst cosine "
                             f"{r.cos_min:.4f}, mean {r.cos_mean:.4f}) although the file is {r.variant}: the two "
                             f"compute different things (pooling, normalisation, tokenizer or truncation; the file "
                             f"declares {em.files[0].head.describe()}).",
                             hint="Convert the checkpoint again with `edgeq convert`, or pass the --reference it "
                                  "was made from.")


__all__ = ["DEFAULT_QUANTS", "SCHEMA", "EmbeddingEval", "EmbeddingQuality", "agreement", "cosines",
           "evaluate_embeddings", "neighbours"]
