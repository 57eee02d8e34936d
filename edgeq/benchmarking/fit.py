"""Whether a benchmark run fits the memory edgeq may use, asked before it starts.

A run that does not fit is not measured: on an 8 GB laptop a 3B model's F32 file (12 GB) or its transformers
fp32 baseline would meet swap or the kernel's OOM killer, and a row that says so ("skipped: needs 12.1 GiB,
7.2 GiB available") is worth more than a machine that stops answering.  What may be used is
``system.memory_bytes``: the host's available memory, or less under a container's cgroup limit.
"""
from __future__ import annotations

import math
from pathlib import Path

from ..errors import EdgeqError
from ..planning import memory
from ..planning.source import from_gguf
from ..sources.checkpoint import read_safetensors_header
from .results import RunSpec

GIB = 1024**3
# Bytes per parameter of each transformers variant's weights (bitsandbytes: int8, and NF4 with its scales).
HF_BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "bnb-int8": 1.0, "bnb-nf4": 0.55}
# A process with torch and transformers imported, before any weight (measured here: 0.4-0.6 GiB).
HF_RUNTIME_BYTES = GIB // 2


def need_bytes(spec: RunSpec) -> int | None:
    """Memory a run needs at its peak (the plan's memory model for a GGUF; weights plus the torch runtime for a
    transformers variant); None when it cannot be told (an unreadable file: the run itself says why)."""
    try:
        if spec.backend == "llama.cpp":
            model = from_gguf(Path(spec.path))
            ctx = spec.batch * (spec.n_prompt + spec.n_gen + 1)
            return memory.estimate(model, Path(spec.path).stat().st_size, ctx=ctx).required_bytes
        params = sum(math.prod(t["shape"]) for p in sorted(Path(spec.path).glob("*.safetensors"))
                     for t in read_safetensors_header(p, check_data=False).values())
    except (OSError, EdgeqError, KeyError, ValueError, TypeError):  # a header the plan cannot read
        return None
    per = HF_BYTES_PER_PARAM.get(spec.variant)
    return int(params * per) + HF_RUNTIME_BYTES if params and per else None


def too_big(specs: list[RunSpec], available_bytes: int) -> dict[int, str]:
    """The runs that need more than ``available_bytes``, each with the reason its row shows."""
    out = {}
    for i, spec in enumerate(specs):
        need = need_bytes(spec)
        if need is not None and need > available_bytes:
            out[i] = (f"needs {need / GIB:.1f} GiB, {available_bytes / GIB:.1f} GiB available: not started, so the "
                      "machine is not driven into swap")
    return out
