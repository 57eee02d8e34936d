"""The engine side of `edgeq run`, in a process of its own (``python -m edgeq.generation.worker < spec.json``).

Writes one event per line on stdout, each prefixed with ``generate.EVENT_PREFIX``.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

from ..backends.stream import stream_generate
from ..errors import EdgeqError
from . import EVENT_PREFIX, GenerateSpec


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(EVENT_PREFIX + json.dumps(event) + "\n")
    sys.stdout.flush()


def main() -> None:
    spec = GenerateSpec(**json.loads(sys.stdin.read()))

    try:
        out = stream_generate(spec.model, spec.prompt, n_predict=spec.n_predict, temp=spec.temp, seed=spec.seed,
                              n_ctx=spec.n_ctx, threads=spec.threads, chat=spec.chat, rpc=spec.rpc,
                              no_local=spec.no_local, tensor_split=spec.tensor_split, on_event=_emit,
                              device=spec.device, lora=spec.lora, lora_scale=spec.lora_scale)
        _emit({"event": "result", "result": out})
    except EdgeqError as e:
        _emit({"event": "error", "kind": e.kind, "message": str(e), "exit_code": e.exit_code})
    except ValueError as e:  # llama-cpp-python's own checks, e.g. a prompt longer than the context
        why = str(e)
        if "Failed to load model" in why:  # the file, not the options: it used to be blamed on --ctx
            _emit({"event": "error", "kind": "gguf", "exit_code": 1,
                   "message": f"llama.cpp cannot load {spec.model} (not a --ctx problem): a tensor that does not "
                              "match the model's metadata, a damaged file, or too little memory for its weights. "
                              "Check it with `edgeq inspect` and `edgeq plan`, then convert it again."})
        else:
            hint = ("shorten the prompt or raise --ctx" if "exceed context window" in why
                    else "lower --ctx: llama.cpp could not allocate a context that large" if "llama_context" in why
                    else "check -n, --ctx and the prompt")
            _emit({"event": "error", "kind": "usage", "message": f"{why} ({hint}).", "exit_code": 2})
    sys.stdout.flush()
    os._exit(0)  # skip the interpreter's teardown of llama.cpp (and its RPC connections)


if __name__ == "__main__":
    main()
