"""`edgeq run MODEL --image FILE PROMPT`: generate from an image and a prompt with a vision-language model.

The text model and its projector (``--mmproj``, else the one its folder's manifest pairs with it) run together in
a child process (``edgeq.generation.vision_worker``) through libmtmd; every check of the arguments runs first.
"""
from __future__ import annotations

import json
import os
import selectors
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import system
from ..errors import EdgeqError, UsageError, from_dict
from ..files import missing_file
from ..llamacpp import Worker
from ..sources.gguf import require_generator
from ..sources.image import require_image
from ..sources.projector import projector_for
from . import DEFAULT_CTX, DEFAULT_N_PREDICT, DEFAULT_TIMEOUT_S, EVENT_PREFIX, MAX_CTX, GenerateResult

DOING = "edgeq run --image needs the text model"


@dataclass
class VisionSpec:
    model: str
    mmproj: str
    image: str
    prompt: str
    n_predict: int = DEFAULT_N_PREDICT
    temp: float = 0.0
    seed: int = 0
    n_ctx: int = DEFAULT_CTX
    threads: int = 0
    chat: bool = False


@dataclass
class VisionResult(GenerateResult):
    """``run``'s result, with what the image cost: its tokens (positions in the context) and encoding time."""

    image: str = ""
    mmproj: str = ""
    image_tokens: int = 0
    image_chunks: int = 0  # slices the image was cut into (an overview and tiles for SmolVLM-style models)
    image_encode_s: float = 0.0


def run_image(model: str | Path, image: str | Path, prompt: str, *, mmproj: str | Path | None = None,
              n_predict: int = DEFAULT_N_PREDICT, temp: float = 0.0, seed: int = 0, n_ctx: int = DEFAULT_CTX,
              threads: int | None = None, chat: bool = False, on_text: Callable[[str], None] | None = None,
              timeout_s: float = DEFAULT_TIMEOUT_S) -> VisionResult:
    """Generate up to ``n_predict`` tokens from ``image`` and ``prompt`` (the image goes first unless the prompt
    holds libmtmd's marker ``<__media__>``); ``mmproj`` defaults to the projector the manifest pairs with the model.
    """
    path = Path(model).expanduser()
    if not path.is_file():
        raise UsageError(f"{path} {missing_file(path)}.", hint="Pass the text model's .gguf (see `edgeq convert`).")
    if n_predict < 1 or n_ctx < 16 or n_ctx > MAX_CTX:
        raise UsageError(f"-n must be at least 1 and --ctx between 16 and {MAX_CTX:,}.")
    if not prompt.strip():
        raise UsageError("the prompt is empty.", hint='Say what to do with the image, e.g. "describe".')
    img = require_image(image)
    proj = projector_for(path, mmproj, doing=DOING)  # refuses a projector as the model, or a model without one
    require_generator(path, "edgeq run generates text")
    spec = VisionSpec(str(path.resolve()), str(proj.resolve()), str(img.resolve()), prompt, n_predict, temp, seed,
                      n_ctx, threads or system.default_threads(), chat)
    out = _run_worker(spec, on_text or (lambda s: None), timeout_s)
    return VisionResult(model=str(path), text=out["text"], finish_reason=out["finish_reason"],
                        prompt_tokens=out["prompt_tokens"], generated_tokens=out["generated_tokens"],
                        prompt_tps=_rate(out["prompt_tokens"], out["prompt_s"]),
                        gen_tps=_rate(max(out["generated_tokens"] - 1, 0), out["gen_s"]),
                        load_s=round(out["load_s"], 3), prompt_s=round(out["prompt_s"], 3),
                        gen_s=round(out["gen_s"], 3), n_layer=out["n_layer"], offloaded_layers=0,
                        image=str(img), mmproj=str(proj), image_tokens=out["image_tokens"],
                        image_chunks=out["image_chunks"], image_encode_s=round(out["encode_s"], 5))


def _rate(n: int, s: float) -> float:
    return round(n / s, 2) if s > 0 else 0.0


def _run_worker(spec: VisionSpec, on_text: Callable[[str], None], timeout_s: float) -> dict[str, Any]:
    """Start the worker, relay its text; its result, or one clear error (its own, or the crash's)."""
    w = Worker("edgeq.generation.vision_worker")
    result, error, phase = None, None, "loading the model and its projector"
    try:
        proc = w.proc
        assert proc.stdin and proc.stdout
        proc.stdin.write(json.dumps(asdict(spec)).encode())
        proc.stdin.close()
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        buf, last = b"", time.monotonic()
        while True:
            if not sel.select(timeout=5.0):
                if time.monotonic() - last > timeout_s:
                    raise EdgeqError(f"no progress for {timeout_s:.0f} s during {phase}; stopped.",
                                     hint="Raise --timeout for a very large model.")
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            last = time.monotonic()
            *lines, buf = (buf + chunk).split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                if not line.startswith(EVENT_PREFIX):
                    continue  # libmtmd prints its progress on stdout
                ev = json.loads(line[len(EVENT_PREFIX):])
                if ev["event"] == "text":
                    on_text(ev["text"])
                elif ev["event"] == "loaded":
                    phase = "generation"
                elif ev["event"] == "result":
                    result = ev["result"]
                elif ev["event"] == "error":
                    error = ev
        if error:
            raise from_dict(error)
        if result is None or w.wait() != 0:
            raise w.failure(f"during {phase} of {Path(spec.model).name} with {Path(spec.mmproj).name}")
        return result
    finally:
        w.stop()
