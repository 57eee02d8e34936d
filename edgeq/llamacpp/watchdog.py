"""Children die with edgeq where Linux's ``PR_SET_PDEATHSIG`` is missing (macOS): a watchdog process.

edgeq starts every tool and worker in a session of its own (so a terminal's Ctrl-C reaches edgeq first and
edgeq stops them); nothing then kills them when edgeq itself is killed.  On Linux the kernel does
(``process.die_with_parent``).  Elsewhere one watchdog per edgeq process does: it reads process-group ids,
``+PGID`` when a child starts and ``-PGID`` when it has been reaped, from a pipe whose only writer is edgeq.
When edgeq ends, by SIGKILL too, the kernel closes that pipe; the watchdog reads end-of-file and kills every
group still registered, then exits.  It runs in a session of its own, so what kills edgeq's group (a closed
terminal, ``kill -9 -PGID``) leaves it to do its job.

(A group id is released once its child is reaped, so an id the system hands out again is never killed; only
a child reaped in the instant edgeq dies could leave one registered.)
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable

_LOCK = threading.Lock()
# Keyed by the pid of the edgeq process: the watchdog (kept, so it is never collected) and the pipe's writing end.
_STATE: dict[int, subprocess.Popen[bytes]] = {}
_FD: dict[int, int] = {}


def _writer() -> int:
    """The pipe to this process's watchdog, started on first use (a forked child starts its own)."""
    me = os.getpid()
    with _LOCK:
        if me not in _FD:
            r, w = os.pipe()  # not inheritable: no other child of edgeq holds the writing end
            _STATE[me] = subprocess.Popen([sys.executable, "-m", "edgeq.llamacpp.watchdog"], stdin=r,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True, close_fds=True)
            os.close(r)
            _FD[me] = w
        return _FD[me]


def watch(pgid: int) -> None:
    """Kill the process group ``pgid`` (a child that leads a session of its own) when edgeq ends."""
    try:
        os.write(_writer(), f"+{pgid}\n".encode())
    except OSError:  # the watchdog itself was killed: start another (it learns only the groups from now on)
        with _LOCK:
            os.close(_FD.pop(os.getpid()))
        os.write(_writer(), f"+{pgid}\n".encode())


def release(pgid: int) -> None:
    """The child that led ``pgid`` has been reaped: forget the id (the system may hand it out again)."""
    fd = _FD.get(os.getpid())
    if fd is not None:
        try:
            os.write(fd, f"-{pgid}\n".encode())
        except OSError:  # no watchdog to tell: ``watch`` starts a new one when it is next needed
            pass


def serve(stream: Iterable[bytes] | None = None) -> set[int]:
    """The watchdog's loop: keep the registered groups until end-of-file, then kill them; return them."""
    groups: set[int] = set()
    for raw in stream if stream is not None else sys.stdin.buffer:
        line = raw.strip()
        if line[:1] in (b"+", b"-") and line[1:].isdigit():
            (groups.add if line[:1] == b"+" else groups.discard)(int(line[1:]))
    for pgid in sorted(groups):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return groups


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the end of edgeq's pipe ends the watchdog
    serve()
