"""One benchmark spec in a worker process of its own: start it, read its rows, name its failure.

``matrix`` runs the matrix of these; ``llama_bench`` runs one beside llama-bench.
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, replace
from pathlib import Path

from ..backends.transformers import unavailable_reason
from ..llamacpp import crash_error, run_worker_once
from ..llamacpp.rpc import went_away
from .results import RunResult, RunSpec
from .worker import _base

WORKER_TIMEOUT_S = 3600


def run_worker(spec: RunSpec) -> list[RunResult]:
    """Run one spec in a fresh interpreter; a crash becomes a failed row, never an exception."""
    if spec.backend == "transformers":
        why = unavailable_reason(spec.variant, spec.device)
        if why:
            return [_row(spec, p, "skipped", why) for p in spec.prompts]
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(spec.threads)}
    try:
        rc, stdout, err_lines = run_worker_once("edgeq.bench.worker", json.dumps(asdict(spec)),
                                                timeout=WORKER_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return [_row(spec, p, "failed", f"timed out after {WORKER_TIMEOUT_S} s") for p in spec.prompts]
    lines = stdout.strip().splitlines()
    if rc != 0 or not lines:
        gone = went_away(spec.rpc)
        engine = "llama.cpp" if spec.backend == "llama.cpp" else "transformers (torch)"
        crash = None if gone else crash_error(rc, f"while benchmarking {Path(spec.path).name}", tail=err_lines,
                                               engine=engine)
        reason = (gone.message if gone else str(crash) if crash
                  else f"worker exited {rc}: {(err_lines or ['no output'])[-1]}")
        return [replace(_row(spec, p, "failed", reason), crash_signal=crash.signal_name if crash else None)
                for p in spec.prompts]
    rows = [RunResult.from_dict(d) for d in json.loads(lines[-1])]
    gone = went_away(spec.rpc) if any(r.status == "failed" for r in rows) else None
    return [replace(r, reason=gone.message) if gone and r.status == "failed" else r for r in rows]


def _row(spec: RunSpec, prompt: str, status: str, reason: str) -> RunResult:
    return RunResult(**_base(spec), prompt=prompt, status=status, reason=reason)
