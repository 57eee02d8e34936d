"""doctor's smoke test, engine side: one GGUF, in a process of its own (``python -m edgeq.backends.probe FILE``).

Loads the file with edgeq's own runner and settings (``BatchRunner``, the
threads edgeq uses), processes a 32-token prompt as one batch (the matrix-matrix
kernels, where ggml repacks weights) and generates 8 tokens (matrix-vector).
Prints one JSON line: the CPU level ggml loaded, what llama.cpp says it uses,
the logits after the prompt and the tokens generated.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

from ..compute import for_resolved
from ..errors import EdgeqError
from ..llamacpp import loaded_cpu_variant
from ..system import default_threads
from .llamacpp import BatchRunner

PROMPT = list(range(3, 35))  # token ids: the smoke model's vocabulary has no words worth spelling
N_GEN = 8


def main() -> None:
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # llama.cpp's own prints must not mix with our line
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else default_threads()
    device = sys.argv[3] if len(sys.argv) > 3 else "cpu"  # resolved by the parent (compute.choose)
    try:
        _probe(out, sys.argv[1], threads, device)
    except EdgeqError as e:
        out.write(json.dumps(e.to_dict()) + "\n")
    except BaseException as e:  # noqa: BLE001 - one line for the parent, whatever it was
        out.write(json.dumps({"error": "error", "message": f"{type(e).__name__}: {e}", "exit_code": 1}) + "\n")
    out.flush()
    os._exit(0)  # skip the interpreter's teardown of llama.cpp


def _probe(out: Any, path: str, threads: int, device: str) -> None:
    import numpy as np

    on = for_resolved(device)
    r = BatchRunner(path, threads=threads, n_ctx=256, n_batch=256, n_seq=1, n_gpu_layers=on.n_gpu_layers,
                    op_offload=on.op_offload)
    info = r.ll.llama_print_system_info().decode(errors="replace").strip()
    r.ll.llama_memory_clear(r.ll.llama_get_memory(r.ctx), True)
    r._decode([(t, i, 0, i == len(PROMPT) - 1) for i, t in enumerate(PROMPT)])
    ptr = r.ll.llama_get_logits_ith(r.ctx, len(PROMPT) - 1)
    logits = np.ctypeslib.as_array(ptr, shape=(r.n_vocab,)).astype(float)
    _, _, gen = r.run([PROMPT], N_GEN)
    out.write(json.dumps({"cpu_variant": loaded_cpu_variant(), "system_info": info, "threads": threads, "device": device,
                          "offloaded_layers": r.offloaded_layers,
                          "rpc": bool(r.ll.llama_supports_rpc()),
                          "logits": [round(x, 6) for x in logits.tolist()], "tokens": gen[0]}) + "\n")


if __name__ == "__main__":
    main()
