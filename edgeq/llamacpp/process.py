"""The one door through which edgeq runs llama.cpp's tools: streamed output, peak RSS, a real deadline,
and a child's crash turned into one line."""
from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ToolchainError, ToolFailed
from ..system import small_pages_env
from . import watchdog
from .crashes import PROGRESS_BAR, crash_error

SETUP_HINT = ("Run `bash scripts/setup.sh` (or `make setup`) from the edgeq checkout to fetch and build it; "
              "an installed edgeq: `pip install --force-reinstall edgeq` rebuilds it (docs/install.md).")

ProgressFn = Callable[[str], None]
_DISK_FULL = re.compile(r"No space left|Not enough free space|ENOSPC", re.IGNORECASE)
DISK_FULL_HINT = "The disk filled up: free some space, or pass -o on a larger disk; partial files were removed."


class ToolOutput(list):  # list[str]: callers index the tail lines as before
    """The last lines a tool printed, plus what it cost."""

    peak_rss_bytes: int | None = None  # the tool's own peak resident memory (children not counted)


def die_with_parent() -> None:
    """In the child, before exec: get SIGKILL if edgeq dies, even by SIGKILL (Linux only).

    The tools run in a session of their own (so a terminal's Ctrl-C reaches edgeq
    first and edgeq stops them), which would otherwise leave them running, and
    writing, after edgeq is killed.
    """
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _load_prctl() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the forked child must not load libraries
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def child_options() -> dict[str, Any]:
    """``Popen`` options for every child edgeq starts: a session of its own, and on Linux the kernel's
    kill when edgeq dies.  Pair with ``tie`` after the start and ``untie`` once it is reaped."""
    return {"start_new_session": True, "preexec_fn": die_with_parent if _PRCTL is not None else None}


def tie(pid: int) -> None:
    """Have the child ``pid`` (leader of its own session) die with edgeq where the kernel will not see to it
    (no ``PR_SET_PDEATHSIG``: macOS): the watchdog kills its group when edgeq ends, by SIGKILL too."""
    if _PRCTL is None:
        watchdog.watch(pid)


def untie(pid: int) -> None:
    """The child ``pid`` has been reaped: the watchdog forgets its group."""
    if _PRCTL is None:
        watchdog.release(pid)


class _PeakRSS:
    """The child's own peak RSS, sampled from /proc/<pid>/status (VmHWM) while it runs.

    ``ru_maxrss`` from wait4 is no good on Linux: it survives fork + exec, so a
    small tool started by a large Python process reports the parent's peak.
    VmHWM is monotone, so the last sample is the peak up to then (growth in the
    final 10 ms can be missed). When wait4's figure is above our own peak it can
    only be the child's, and it is exact, so it wins.
    """

    INTERVAL_S = 0.01

    def __init__(self, pid: int) -> None:
        import threading

        self.path, self.peak = Path(f"/proc/{pid}/status"), 0
        self.parent_peak = own_peak_rss()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        if self.path.exists():
            self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                for line in self.path.read_text(encoding="ascii", errors="replace").splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak = max(self.peak, int(line.split()[1]) * 1024)
            except (OSError, ValueError):
                return
            self._done.wait(self.INTERVAL_S)

    def stop(self, ru_maxrss: int | None = None) -> int | None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        if ru_maxrss and self.parent_peak and ru_maxrss > self.parent_peak:
            return ru_maxrss
        return self.peak or ru_maxrss or None


def own_peak_rss() -> int | None:
    """This process's peak RSS in bytes (VmHWM), or None where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _wait(proc: subprocess.Popen[str], sampler: _PeakRSS) -> tuple[int, int | None]:
    """Reap the child: (exit code, peak RSS in bytes; wait4's figure only where /proc is missing)."""
    if not hasattr(os, "wait4"):
        return proc.wait(), sampler.stop()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return proc.returncode, sampler.stop(usage.ru_maxrss * scale)


def run_tool(argv: Sequence[str | os.PathLike[str]], *, name: str | None = None,
             on_line: ProgressFn | None = None, env: dict[str, str] | None = None,
             timeout: float | None = None, tail_lines: int = 40, stdout: Path | None = None,
             until: re.Pattern[str] | None = None) -> ToolOutput:
    """Run a native tool (or the converter), streaming its output line by line.

    Output goes to ``on_line`` as it arrives; the last ``tail_lines`` lines are
    kept and returned, with the tool's peak RSS.  With ``stdout`` (a file), the
    tool's standard output goes there whole (a generated text) and only its
    standard error (the log) is streamed.  A non-zero exit raises
    ``ToolFailed`` naming the tool and its last line.  On Ctrl-C the child is
    stopped before re-raising, and if edgeq is killed outright the child is
    killed too, so no tool keeps writing after edgeq has gone.

    ``until``: a line the tool prints after all the caller reads.  llama.cpp's tools log from a thread they do
    not wait for at exit (the pinned common/log.cpp says so): on a starved CPU a run can exit 0 before its last
    lines.  Such a run is repeated, ``UNTIL_ATTEMPTS`` runs in all, then an error: never a result with lines lost.
    """
    name = name or Path(str(argv[0])).name
    seen: list[str] = []

    def watch(line: str) -> None:
        if until is not None and until.search(line):
            seen.append(line)
        if on_line:
            on_line(line)

    for _ in range(UNTIL_ATTEMPTS if until else 1):
        out = _run_once(argv, name, watch, env, timeout, tail_lines, stdout)
        if until is None or seen:
            return out
    assert until is not None
    raise ToolchainError(f"{name} exited {UNTIL_ATTEMPTS} times before printing its last lines ({until.pattern!r}).",
                         hint="llama.cpp's logger loses a tool's last lines when the CPU is starved: try a quieter machine.")


UNTIL_ATTEMPTS = 3


def _run_once(argv: Sequence[str | os.PathLike[str]], name: str, on_line: ProgressFn, env: dict[str, str] | None,
              timeout: float | None, tail_lines: int, stdout: Path | None) -> ToolOutput:
    args = [str(a) for a in argv]
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    try:
        with open(stdout, "wb") if stdout else contextlib.nullcontext() as out_file:
            proc = subprocess.Popen(args, stdout=out_file or subprocess.PIPE,
                                    stderr=subprocess.PIPE if out_file else subprocess.STDOUT, text=True,
                                    errors="replace", bufsize=1, env=small_pages_env({**os.environ, **(env or {})}),
                                    **child_options())
    except OSError as e:
        raise ToolchainError(f"cannot start {name}: {e}.", hint=SETUP_HINT) from e
    tie(proc.pid)
    stream = proc.stderr if stdout else proc.stdout
    sampler = _PeakRSS(proc.pid)
    # A deadline that holds even when the tool hangs with its output open (the loop below only
    # ends when it closes stdout): the timer stops it, which closes the pipe.
    expired = threading.Event()
    timer = threading.Timer(timeout, _expire, (proc, expired)) if timeout else None
    try:
        if timer:
            timer.start()
        assert stream is not None
        for line in stream:
            line = line.rstrip("\n")
            tail.append(line)
            on_line(line)
        rc, peak = _wait(proc, sampler)
    except BaseException:
        sampler.stop()
        stop_process(proc)
        raise
    finally:
        if timer:
            timer.cancel()
        if proc.returncode is not None:
            untie(proc.pid)
    if expired.is_set():
        raise ToolchainError(f"{name} did not finish within {timeout:g} s and was stopped.",
                             hint="A slow disk or a very large model can need longer; otherwise run `edgeq doctor`.")
    if rc != 0:
        model = _model_arg(args)
        crash = crash_error(rc, f"in {name}" + (f" on {model}" if model else ""), tail=list(tail))
        if crash:
            raise crash
        lines = [line for line in tail if not PROGRESS_BAR.search(line)]  # the error, not the bar after it
        disk_full = any(_DISK_FULL.search(line) for line in lines)
        raise ToolFailed(name, rc, "\n".join(lines), hint=DISK_FULL_HINT if disk_full else None)
    out = ToolOutput(tail)
    out.peak_rss_bytes = peak
    return out


def json_array(lines: Sequence[str]) -> list[Any]:
    """The JSON array a tool printed last (``llama-bench -o json``), after whatever log lines came first.

    Raises ``ValueError`` when there is none.
    """
    text = "\n".join(lines)
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end < start:
        raise ValueError("no JSON array in the tool's output")
    rows = json.loads(text[start:end + 1])
    if not isinstance(rows, list):
        raise ValueError("the tool's JSON is not an array")
    return rows


def _expire(proc: subprocess.Popen[str], expired: threading.Event) -> None:
    """The deadline passed: kill the tool's whole session; the reader sees its pipe close and reaps it."""
    expired.set()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_process(proc: subprocess.Popen[str]) -> None:
    """Stop a child and its own children (it runs in a session of its own)."""
    if proc.poll() is not None:
        untie(proc.pid)
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    untie(proc.pid)


def _model_arg(args: Sequence[str]) -> str | None:
    for flag in ("-m", "--model"):
        if flag in args[:-1]:
            return Path(args[args.index(flag) + 1]).name
    return None
