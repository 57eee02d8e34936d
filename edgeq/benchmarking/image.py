"""`bench --image`: what one image costs a vision-language model beside pp/tg: the projector's encoding time and
the tokens (context positions) the image becomes, measured through libmtmd in a worker per model.

Each model loads once with its projector (the one its manifest pairs with it, or ``--mmproj``); a warm-up prompt
runs first, then ``reps`` timed ones, each encoding the image afresh (libmtmd keeps no cache between prompts).
"""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import system
from ..errors import EdgeqError
from ..llamacpp import run_worker_once
from ..sources.image import require_image
from ..sources.projector import projector_for

DOING = "bench --image measures image encoding with the model's projector"
PROMPT = "Describe this image."


@dataclass
class ImageRun:
    model: str
    mmproj: str
    image: str
    status: str  # ok | failed
    reason: str | None = None
    image_tokens: int = 0  # context positions the image takes
    image_chunks: int = 0  # slices it is cut into
    encode_ms: list[float] = field(default_factory=list)  # the projector's encoding, per repetition
    prefill_ms: list[float] = field(default_factory=list)  # the prompt's tokens and the image's through the text model
    encode_ms_median: float | None = None
    image_tokens_per_s: float | None = None  # image tokens over encoding plus prefill, median


def check_image_inputs(models: list[Path], image: str | Path, mmproj: str | Path | None) -> Path:
    """Refuse before anything is measured: the image, and a projector for every GGUF."""
    img = require_image(image)
    for m in models:
        projector_for(m, mmproj, doing=DOING)
    return img


def bench_image(models: list[Path], image: str | Path, *, reps: int, threads: int | None = None,
                mmproj: str | Path | None = None, timeout_s: float = 600) -> list[ImageRun]:
    """One ``ImageRun`` per model: ``reps`` timed encodings of ``image`` after a warm-up."""
    img = check_image_inputs(models, image, mmproj)
    runs = []
    for m in models:
        proj = projector_for(m, mmproj, doing=DOING)
        req = {"model": str(m), "mmproj": str(proj), "image": str(img), "reps": reps,
               "threads": threads or system.default_threads(), "prompt": PROMPT}
        run = ImageRun(str(m), str(proj), str(img), "failed")
        try:
            rc, out, tail = run_worker_once("edgeq.benchmarking.image_worker", json.dumps(req), timeout=timeout_s)
        except Exception as e:  # a hung worker (TimeoutExpired): this run failed, the others are still measured
            run.reason = f"{type(e).__name__}: {e}"
            runs.append(run)
            continue
        line = next((ln for ln in reversed(out.splitlines()) if ln.startswith("{")), None)
        got: dict[str, Any] = json.loads(line) if line else {"error": (tail[-1] if tail else f"exit {rc}")}
        if "error" in got:
            run.reason = str(got["error"])
        else:
            run.status = "ok"
            run.image_tokens, run.image_chunks = got["image_tokens"], got["image_chunks"]
            run.encode_ms, run.prefill_ms = got["encode_ms"], got["prefill_ms"]
            run.encode_ms_median = round(statistics.median(run.encode_ms), 3)
            total = statistics.median(e + p for e, p in zip(run.encode_ms, run.prefill_ms))
            run.image_tokens_per_s = round(run.image_tokens / total * 1000, 1) if total > 0 else None
        runs.append(run)
    return runs


def failed(runs: list[ImageRun]) -> EdgeqError | None:
    """The error to exit with when no image run was measured."""
    if runs and all(r.status != "ok" for r in runs):
        return EdgeqError(f"no image run was measured: {runs[0].reason}")
    return None


def as_dicts(runs: list[ImageRun]) -> list[dict[str, object]]:
    return [asdict(r) for r in runs]
