"""The engine side of `edgeq run --image`, in a process of its own (``python -m edgeq.generation.vision_worker``).

Reads a ``VisionSpec`` as JSON on stdin; writes one event per line on stdout, each prefixed with ``EVENT_PREFIX``.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..backends.mtmd import VisionRunner
from ..sources.gguf import read as read_gguf
from . import EVENT_PREFIX
from .vision import VisionSpec


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(EVENT_PREFIX + json.dumps(event) + "\n")
    sys.stdout.flush()


def _generate(spec: VisionSpec) -> dict[str, Any]:
    t0 = time.perf_counter()
    runner = VisionRunner(spec.model, spec.mmproj, threads=spec.threads, n_ctx=spec.n_ctx)
    load_s = time.perf_counter() - t0
    _emit({"event": "loaded", "load_s": load_s})
    try:
        text = spec.prompt if runner.marker in spec.prompt else f"{runner.marker}\n{spec.prompt}"
        if spec.chat:
            text = runner.chat_prompt(text)
        chunks = runner.tokenize(text, spec.image)
        try:
            n_tokens = int(runner.M.mtmd_helper_get_n_pos(chunks))
            if n_tokens + spec.n_predict > spec.n_ctx:
                raise ValueError(f"the image and prompt take {n_tokens} of the {spec.n_ctx} context positions, "
                                 f"leaving fewer than -n {spec.n_predict} (raise --ctx or lower -n)")
            prompt = runner.evaluate(chunks)
        finally:
            runner.M.mtmd_input_chunks_free(chunks)
        pieces: list[str] = []

        def on_text(piece: str) -> None:
            pieces.append(piece)
            _emit({"event": "text", "text": piece})

        tokens, finish, gen_s = runner.generate(spec.n_predict, temp=spec.temp, seed=spec.seed, on_text=on_text)
    finally:
        runner.close()
    return {"text": "".join(pieces), "finish_reason": finish, "prompt_tokens": n_tokens,
            "generated_tokens": len(tokens), "prompt_s": prompt.prompt_s, "gen_s": gen_s, "load_s": load_s,
            "encode_s": prompt.encode_s, "image_tokens": prompt.image_tokens, "image_chunks": prompt.image_chunks,
            "n_layer": int(read_gguf(spec.model).block_count or 0)}


def main() -> None:
    spec = VisionSpec(**json.loads(sys.stdin.read()))
    try:
        _emit({"event": "result", "result": _generate(spec)})
    except ValueError as e:  # the inputs: an image libmtmd cannot decode, a prompt that does not fit, no template
        _emit({"event": "error", "kind": "usage", "exit_code": 2, "message": f"{e}."})
    except FloatingPointError as e:
        _emit({"event": "error", "kind": "gguf", "exit_code": 1,
               "message": f"{Path(spec.model).name}: {e}, so it can generate nothing; convert it again."})
    except RuntimeError as e:  # a load or decode that llama.cpp refused
        _emit({"event": "error", "kind": "gguf", "exit_code": 1, "message": f"{e}."})
    sys.stdout.flush()
    os._exit(0)  # skip the interpreter's teardown of llama.cpp


if __name__ == "__main__":
    main()
