"""The engine side of `bench --image` (``python -m edgeq.benchmarking.image_worker < request.json``): one JSON line
with the image's tokens and each repetition's encoding and prefill milliseconds, or {"error": ...}."""
from __future__ import annotations

import json
import os
import sys
from typing import Any

from ..backends.mtmd import VisionRunner


def _measure(req: dict[str, Any]) -> dict[str, Any]:
    runner = VisionRunner(req["model"], req["mmproj"], threads=req["threads"], n_ctx=4096)
    try:
        text = f"{runner.marker}\n{req['prompt']}"
        out: dict[str, Any] = {"encode_ms": [], "prefill_ms": []}
        for rep in range(req["reps"] + 1):  # the first is the warm-up
            chunks = runner.tokenize(text, req["image"])
            try:
                got = runner.evaluate(chunks)
            finally:
                runner.M.mtmd_input_chunks_free(chunks)
            if rep:
                out["encode_ms"].append(round(got.encode_s * 1000, 3))
                out["prefill_ms"].append(round(got.prompt_s * 1000, 3))
            out["image_tokens"], out["image_chunks"] = got.image_tokens, got.image_chunks
        return out
    finally:
        runner.close()


def main() -> None:
    req = json.loads(sys.stdin.read())
    try:
        result = _measure(req)
    except (ValueError, RuntimeError) as e:
        result = {"error": str(e)}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
