"""One embedder in a process of its own (``python -m edgeq.embeddings.worker``): llama.cpp or sentence-transformers.

Protocol: one JSON request on stdin (``Request``'s fields), one JSON reply on stdout: the vectors (``op`` "embed")
or the timings (``op`` "bench"), with the load time and the process's own peak RSS, which is therefore one
model's and one backend's (no torch in a llama.cpp run).  A failure is a reply too (``error``), never a crash of
the parent; a native crash ends this process only.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from ..backends.embedders import LlamaEmbedder, STEmbedder
from ..llamacpp import own_peak_rss
from .protocol import Request

WARMUP_TEXTS = 4


def _embedder(req: Request) -> Any:
    if req.backend == "llama.cpp":
        return LlamaEmbedder(req.path, threads=req.threads, normalize=req.normalize,
                             max_seq_length=req.max_seq_length, texts=req.texts, batches=req.batches)
    return STEmbedder(req.path, req.variant, threads=req.threads, max_seq_length=req.max_seq_length)


def serve(req: Request) -> dict[str, Any]:
    """Load the embedder, then embed (``embed``) or time (``bench``) the texts."""
    t0 = time.perf_counter()
    emb = _embedder(req)
    load_s = time.perf_counter() - t0
    reply: dict[str, Any] = {"load_s": round(load_s, 4)}
    if req.op == "embed":
        reply["vectors"] = emb.embed(req.texts, max(req.batches)).tolist()
    else:
        reply["runs"] = [_time(emb, req, b) for b in req.batches]
    reply["peak_rss_bytes"] = own_peak_rss()
    return reply


def _time(emb: Any, req: Request, batch: int) -> dict[str, Any]:
    """Texts per second over whole passes, and each call's latency (ms) in the last pass."""
    emb.embed(req.texts[: max(WARMUP_TEXTS, batch)], batch)  # pages, caches and thread pools warmed
    rates: list[float] = []
    lat: list[float] = []
    for _ in range(req.reps):
        lat = []
        start = time.perf_counter()
        for i in range(0, len(req.texts), batch):
            t = time.perf_counter()
            emb.embed(req.texts[i: i + batch], batch)
            lat.append(1000 * (time.perf_counter() - t))
        rates.append(len(req.texts) / (time.perf_counter() - start))
    return {"batch": batch, "texts_per_s": rates, "latency_ms": lat}


def main() -> None:
    # Replies on a private copy of stdout; fd 1 becomes stderr, so a library's stray print never lands in them.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    req = Request(**json.loads(sys.stdin.read()))
    try:
        reply = serve(req)
    except Exception as e:  # noqa: BLE001 - reported to the parent as one line
        reply = {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
    out.write(json.dumps(reply) + "\n")
    out.flush()
    os._exit(0)  # skip the slow teardown of torch / llama.cpp


if __name__ == "__main__":
    main()
