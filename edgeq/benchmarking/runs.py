"""Benchmark specs in worker processes of their own: start them, keep them while memory allows, read their rows,
name their failures.

``matrix`` runs the matrix through a ``WorkerPool``; ``llama_bench`` runs one spec beside llama-bench.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import psutil

from ..backends.transformers import unavailable_reason
from ..llamacpp import Worker, crash_error, run_worker_once
from ..llamacpp.rpc import went_away
from ..system import memory_bytes
from .results import RunResult, RunSpec, weight_file_bytes
from .worker import _base

WORKER_TIMEOUT_S = 3600
MEASURE = b'{"op": "measure"}\n'
# Share of the memory available when the matrix starts that idle workers may hold between rounds.
POOL_MEMORY_SHARE = 0.6
# Each live worker holds three of this process's file descriptors (stdin, stdout, its stderr file); macOS
# allows 256 by default.
_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
MAX_LIVE = 1 << 20 if _NOFILE in (resource.RLIM_INFINITY, -1) else max(1, (_NOFILE - 64) // 3)


def _env(spec: RunSpec) -> dict[str, str]:
    return {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
            "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(spec.threads)}


def _skipped(spec: RunSpec) -> list[RunResult] | None:
    if spec.backend == "transformers" and (why := unavailable_reason(spec.variant, spec.device)):
        return [_row(spec, p, "skipped", why) for p in spec.prompts]
    return None


def run_worker(spec: RunSpec) -> list[RunResult]:
    """Run one spec once in a fresh interpreter; a crash becomes a failed row, never an exception."""
    if (skipped := _skipped(spec)) is not None:
        return skipped
    request = json.dumps(asdict(spec)) + "\n" + MEASURE.decode()
    try:
        rc, stdout, err_lines = run_worker_once("edgeq.benchmarking.worker", request, timeout=WORKER_TIMEOUT_S,
                                                env=_env(spec))
    except subprocess.TimeoutExpired:
        return [_row(spec, p, "failed", f"timed out after {WORKER_TIMEOUT_S} s") for p in spec.prompts]
    lines = stdout.strip().splitlines()
    if rc != 0 or not lines:
        return _dead(spec, rc, err_lines)
    return _rows(spec, lines[-1])


class LiveWorker:
    """One spec's worker, loaded once and asked to measure once per round."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.worker = Worker("edgeq.benchmarking.worker", env=_env(spec))
        self._send(json.dumps(asdict(spec)).encode() + b"\n")

    @property
    def pid(self) -> int:
        return self.worker.proc.pid

    def rss_bytes(self) -> int:
        """What it holds now (0 once it has gone)."""
        try:
            return int(psutil.Process(self.pid).memory_info().rss)
        except psutil.Error:
            return 0

    def measure(self) -> list[RunResult]:
        """One round's rows; a death, a hang past ``WORKER_TIMEOUT_S`` or a failure gives failed rows."""
        proc = self.worker.proc
        assert proc.stdout is not None
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            try:  # the whole session: a grandchild holding the pipe would keep readline blocked
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                proc.kill()

        timer = threading.Timer(WORKER_TIMEOUT_S, expire)
        timer.daemon = True
        timer.start()
        line = b""
        try:
            if self._send(MEASURE):
                line = proc.stdout.readline()
        finally:
            timer.cancel()
        if line:
            return _rows(self.spec, line.decode(errors="replace"))
        if expired.is_set():
            return [_row(self.spec, p, "failed", f"timed out after {WORKER_TIMEOUT_S} s") for p in self.spec.prompts]
        return _dead(self.spec, self.worker.wait(), self.worker.tail())

    def _send(self, data: bytes) -> bool:
        stdin = self.worker.proc.stdin
        assert stdin is not None
        try:
            stdin.write(data)
            stdin.flush()
            return True
        except OSError:  # it died (between rounds, say): its failure is read from its exit and stderr
            return False

    def stop(self) -> None:
        self.worker.stop()


class WorkerPool:
    """The matrix's workers, one per spec, each loading its model once and measuring it every round.

    Loading dominated a matrix once every repetition round started a fresh process.  A
    worker stays alive between rounds while the idle ones fit in ``POOL_MEMORY_SHARE``
    of the memory available at the start; past that, the one needed furthest ahead is
    stopped (rounds visit the specs in a fixed cycle, so that is the most recently
    used) and its next round loads afresh.  Peak RSS stays honest either way: each
    process only ever held its own model, and the kernel's peak is per process.
    """

    def __init__(self, specs: Sequence[RunSpec], *, budget_bytes: int | None = None) -> None:
        self.specs = list(specs)
        self.budget = (budget_bytes if budget_bytes is not None
                       else int(POOL_MEMORY_SHARE * memory_bytes()[1]))
        self.live: dict[int, LiveWorker] = {}
        self.peak: dict[int, int] = {}  # the peak RSS each spec's worker reported
        self.loads = [0] * len(self.specs)  # workers started per spec

    def measure(self, i: int) -> list[RunResult]:
        """Spec ``i``'s rows for one round, from its live worker or a new one."""
        spec = replace(self.specs[i], reps=1)
        if (skipped := _skipped(spec)) is not None:
            return skipped
        w = self.live.pop(i, None)
        if w is None:
            self._make_room(i)
            w = LiveWorker(spec)
            self.loads[i] += 1
        try:
            rows = w.measure()
        except BaseException:  # Ctrl-C, SIGTERM: the worker being asked is not in `live`, so stop it here
            w.stop()
            raise
        if any(r.status != "ok" for r in rows):
            w.stop()  # a failed worker is never asked again: the next round starts afresh
        else:
            self.live[i] = w
            self.peak[i] = max(r.peak_rss_bytes or 0 for r in rows)
        return rows

    def _make_room(self, i: int) -> None:
        need = self.peak.get(i) or _expected_bytes(self.specs[i])
        n = len(self.specs)
        while self.live and (sum(w.rss_bytes() for w in self.live.values()) + need > self.budget
                             or len(self.live) >= MAX_LIVE):
            furthest = max(self.live, key=lambda j: (j - i) % n)
            self.live.pop(furthest).stop()

    def close(self) -> None:
        for w in self.live.values():
            w.stop()
        self.live.clear()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _expected_bytes(spec: RunSpec) -> int:
    """Memory a spec's first load may take: its GGUF's size, or twice a checkpoint's weight files
    (fp32 from 16-bit weights)."""
    return weight_file_bytes(spec) * (1 if Path(spec.path).is_file() else 2)


def _rows(spec: RunSpec, line: str) -> list[RunResult]:
    try:
        rows = [RunResult.from_dict(d) for d in json.loads(line)]
    except (ValueError, TypeError, AttributeError):
        return [_row(spec, p, "failed", f"the worker answered something other than its rows: {line[:120]!r}")
                for p in spec.prompts]
    gone = went_away(spec.rpc) if any(r.status == "failed" for r in rows) else None
    return [replace(r, reason=gone.message) if gone and r.status == "failed" else r for r in rows]


def _dead(spec: RunSpec, rc: int | None, err_lines: list[str]) -> list[RunResult]:
    """The failed rows of a worker that died without answering: the crash named, or its exit and last line."""
    gone = went_away(spec.rpc)
    engine = "llama.cpp" if spec.backend == "llama.cpp" else "transformers (torch)"
    crash = None if gone else crash_error(rc, f"while benchmarking {Path(spec.path).name}", tail=err_lines,
                                           engine=engine)
    reason = (gone.message if gone else str(crash) if crash
              else f"worker exited {rc}: {(err_lines or ['no output'])[-1]}")
    return [replace(_row(spec, p, "failed", reason), crash_signal=crash.signal_name if crash else None)
            for p in spec.prompts]


def skipped_rows(spec: RunSpec, reason: str) -> list[RunResult]:
    return [_row(spec, p, "skipped", reason) for p in spec.prompts]


def _row(spec: RunSpec, prompt: str, status: str, reason: str) -> RunResult:
    return RunResult(**_base(spec), prompt=prompt, status=status, reason=reason)
