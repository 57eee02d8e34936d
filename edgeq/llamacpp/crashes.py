"""A native tool's crash as one line: which signal, what it usually means on this host, and what to run."""
from __future__ import annotations

import re
import signal
from collections.abc import Sequence

from ..errors import NativeCrash

DOCTOR_HINT = "Run `edgeq doctor`: it tests llama.cpp's CPU paths on this host and names the fix."
PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm

CRASH_CAUSES = {
    "SIGILL": "an instruction this CPU does not have: the build's CPU level is above this host's",
    "SIGSEGV": "a fault in its native code on this host (on Intel CPUs with AMX, ggml's AMX kernels are a known cause)",
    "SIGBUS": "a bad memory access (a model file changed or truncated while mapped, or a disk error)",
    "SIGABRT": "it stopped on a failed internal check",
    "SIGFPE": "an arithmetic fault in its native code",
}


def crash_error(returncode: int | None, doing: str, *, tail: Sequence[str] = (),
                engine: str = "llama.cpp") -> NativeCrash | None:
    """The one-line error for a child that died of a crash signal (``returncode`` < 0), else None."""
    if returncode is None or returncode >= 0:
        return None
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        return None
    if name not in CRASH_CAUSES:
        return None  # SIGKILL, SIGTERM: stopped from outside, not a crash
    lines = [ln.strip() for ln in tail if ln.strip() and not PROGRESS_BAR.search(ln)]
    # An abort says why on its last lines (GGML_ASSERT ...); a segfault's last line is just progress.
    detail = next((ln for ln in reversed(lines) if re.search(r"error|assert|abort|fail", ln, re.IGNORECASE)), None)
    if engine != "llama.cpp":
        return NativeCrash(name, doing, "a fault in its native code", detail=detail[:200] if detail else None,
                           engine=engine)
    return NativeCrash(name, doing, CRASH_CAUSES[name], detail=detail[:200] if detail else None, hint=DOCTOR_HINT)
