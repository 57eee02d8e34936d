"""`edgeq bench` on a sentence-embedding model: embeddings per second, latency, peak RSS and load time.

Every GGUF runs on llama.cpp and the checkpoint on sentence-transformers (fp32, bf16; bnb-int8 where
bitsandbytes runs), each in its own worker process that embeds the same passages at every batch size (one warm-up
pass, then ``reps`` timed passes).  The hypothesis asked of every quantization (``verdicts``): a quantized file
embeds faster on this CPU than the F16 file and than sentence-transformers in fp32.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .._version import __version__
from ..benchmarking.results import Stat
from ..errors import EdgeqError
from ..planning.objective import overlap
from ..sources.gguf import read
from ..system import default_threads, system_info
from .models import ask_worker, resolve_models
from .protocol import Request
from .quality import FLOAT_TYPES
from .texts import corpus

SCHEMA = "edgeq-bench-embeddings/1"
DEFAULT_QUANTS = ("F16", "Q8_0", "Q4_K_M")
DEFAULT_ST_VARIANTS = ("fp32", "bf16")
DEFAULT_BATCHES = (1, 32)
DEFAULT_TEXTS = 32  # passages per timed pass: ~100 tokens each, a few seconds a pass on 2 cores
DEFAULT_REPS = 3


@dataclass
class EmbeddingRun:
    backend: str
    variant: str
    path: str
    batch: int
    status: str  # ok | failed
    reason: str | None = None
    load_s: float | None = None
    texts_per_s: Stat | None = None  # embeddings per second over whole passes (min–max over reps)
    latency_ms: float | None = None  # median time of one call of ``batch`` texts
    peak_rss_bytes: int | None = None  # the worker's own peak over all its batch sizes
    size_bytes: int | None = None
    bits_per_weight: float | None = None


@dataclass
class EmbeddingBench:
    schema: str
    model: str
    settings: dict[str, Any]
    environment: dict[str, Any]
    runs: list[EmbeddingRun] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    edgeq_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_embeddings(models: list[str], *, quants: list[str] | tuple[str, ...] = DEFAULT_QUANTS,
                     st_variants: list[str] | tuple[str, ...] = DEFAULT_ST_VARIANTS,
                     batches: list[int] | tuple[int, ...] = DEFAULT_BATCHES, reps: int = DEFAULT_REPS,
                     n_texts: int = DEFAULT_TEXTS, threads: int | None = None, progress: bool = True,
                     revision: str | None = None, token: str | None = None) -> EmbeddingBench:
    """Measure every file on llama.cpp and the checkpoint on sentence-transformers, at each batch size."""
    em = resolve_models(models, [q.upper() for q in quants], progress=progress, revision=revision, token=token)
    threads = threads or default_threads()
    texts = corpus(n_queries=1, n_passages=n_texts).passages
    info = system_info()
    res = EmbeddingBench(SCHEMA, em.name, {"threads": threads, "batches": list(batches), "reps": reps,
                                           "texts": len(texts), "head": asdict(em.head)},
                         {"cpu": info.cpu, "cores": info.physical_cores, "ram_total_bytes": info.ram_total_bytes})
    common = Request(op="bench", backend="llama.cpp", path="", variant="", texts=texts, threads=threads,
                     max_seq_length=em.head.max_seq_length, batches=list(batches), reps=reps)
    for f in em.files:
        gguf = read(f.path)
        res.runs += _measure(replace(common, path=str(f.path), variant=f.label, normalize=f.head.normalize),
                             gguf.file_size_bytes, gguf.bits_per_weight)
    if em.reference is not None:
        for v in st_variants:
            res.runs += _measure(replace(common, backend="sentence-transformers", path=str(em.reference), variant=v),
                                 None, None)
    res.verdicts = verdicts(res.runs)
    if not any(r.status == "ok" for r in res.runs):
        raise EdgeqError(f"no embedding run succeeded: {res.runs[0].reason if res.runs else 'nothing to run'}.",
                         hint="Run `edgeq doctor`; pass --quants to pick the files.")
    return res


def _measure(req: Request, size: int | None, bpw: float | None) -> list[EmbeddingRun]:
    base = dict(backend=req.backend, variant=req.variant, path=req.path, size_bytes=size, bits_per_weight=bpw)
    try:
        rep = ask_worker(req, f"embedding with {req.variant}")
    except EdgeqError as e:  # one failed variant (bnb on a CPU without its kernels) is a row, not the end
        return [EmbeddingRun(batch=b, status="failed", reason=str(e), **base) for b in req.batches]  # type: ignore[arg-type]
    return [EmbeddingRun(batch=r["batch"], status="ok", load_s=rep["load_s"], texts_per_s=Stat.of(r["texts_per_s"]),
                         latency_ms=round(statistics.median(r["latency_ms"]), 3), peak_rss_bytes=rep["peak_rss_bytes"],
                         **base)  # type: ignore[arg-type]
            for r in rep["runs"]]


def _range(r: EmbeddingRun) -> tuple[float, float]:
    assert r.texts_per_s is not None
    return (r.texts_per_s.min, r.texts_per_s.max)


def verdicts(runs: list[EmbeddingRun]) -> list[str]:
    """Per quantized GGUF and batch size: faster than the F16 file and than sentence-transformers fp32?

    Two speeds whose min–max ranges overlap are "about the same": noise, not a verdict."""
    ok = [r for r in runs if r.status == "ok" and r.texts_per_s]
    out = []
    for r in ok:
        if r.backend != "llama.cpp" or r.variant in FLOAT_TYPES:
            continue
        f16 = next((x for x in ok if x.backend == "llama.cpp" and x.variant == "F16" and x.batch == r.batch), None)
        st = next((x for x in ok if x.backend != "llama.cpp" and x.variant == "fp32" and x.batch == r.batch), None)
        base = f16 or st
        if base is None:
            continue
        assert r.texts_per_s and base.texts_per_s
        ratio = r.texts_per_s.median / base.texts_per_s.median
        word = ("about the same (ranges overlap)" if overlap(_range(r), _range(base))
                else "HOLDS" if ratio > 1 else "does NOT hold")
        name = "F16 GGUF" if f16 else "sentence-transformers fp32"
        parts = [f"{ratio:.2f}× {name} ({r.texts_per_s.median:.1f} vs {base.texts_per_s.median:.1f} embeddings/s)"]
        if f16 and st and st.texts_per_s:
            parts.append(f"{r.texts_per_s.median / st.texts_per_s.median:.2f}× sentence-transformers fp32")
        if r.peak_rss_bytes and base.peak_rss_bytes:
            parts.append(f"peak RSS {r.peak_rss_bytes / base.peak_rss_bytes:.2f}× {name}'s")
        out.append(f"llama.cpp {r.variant} (batch {r.batch}): hypothesis {word}: " + ", ".join(parts) + ".")
    return out


__all__ = ["DEFAULT_BATCHES", "DEFAULT_QUANTS", "DEFAULT_ST_VARIANTS", "SCHEMA", "EmbeddingBench", "EmbeddingRun",
           "bench_embeddings", "verdicts"]
