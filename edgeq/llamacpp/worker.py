"""The one way edgeq starts its Python worker processes (bench's worker, run's engine, eval's scorer,
doctor's probe): pipes, stderr kept aside for the post-mortem, killed with edgeq."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from ..errors import EdgeqError
from ..system import small_pages_env
from .crashes import crash_error
from .process import child_options, tie, untie


class Worker:
    """``python -m MODULE`` as every edgeq worker runs: pipes in and out, stderr to a temporary file
    (a chatty child can never block on it, and its last lines explain a death), killed with edgeq.

    bench's worker, run's engine, eval's scorer and doctor's probe all start this way.
    """

    def __init__(self, module: str, *, env: dict[str, str] | None = None, args: Sequence[str] = (),
                 pass_fds: Sequence[int] = ()) -> None:
        self.module = module
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr,
                                     env=small_pages_env(os.environ if env is None else env), pass_fds=tuple(pass_fds),
                                     **child_options())
        tie(self.proc.pid)

    def tail(self, n: int = 20) -> list[str]:
        """The last ``n`` non-empty lines the worker wrote to stderr."""
        self.stderr.seek(0)
        return [ln for ln in self.stderr.read().decode(errors="replace").splitlines() if ln.strip()][-n:]

    def wait(self, timeout: float = 30) -> int:
        """Its exit code; one that has closed its output but lingers is stopped."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def failure(self, doing: str, *, engine: str = "llama.cpp") -> EdgeqError:
        """The one error for a worker that died: the crash (signal, cause, fix), else its exit and last line."""
        rc, tail = self.wait(), self.tail()
        return crash_error(rc, doing, tail=tail, engine=engine) or EdgeqError(
            f"{engine} stopped {doing} (exit {rc}): {tail[-1].strip() if tail else 'no output'}")

    def stop(self) -> None:
        """Kill it if it still runs, reap it, close its files."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        untie(self.proc.pid)
        for f in (self.proc.stdin, self.proc.stdout):
            if f:
                try:
                    f.close()
                except OSError:  # a request still buffered for a worker that died: nothing to deliver it to
                    pass
        self.stderr.close()


def run_worker_once(module: str, request: str, *, timeout: float, env: dict[str, str] | None = None,
                    args: Sequence[str] = ()) -> tuple[int, str, list[str]]:
    """Start a ``Worker``, send ``request``, read its whole output: (exit code, stdout, stderr tail).

    ``subprocess.TimeoutExpired`` is raised (the worker killed) when it runs past ``timeout``.
    """
    w = Worker(module, env=env, args=args)
    try:
        out, _ = w.proc.communicate(request.encode(), timeout=timeout)
        return w.proc.returncode, out.decode(errors="replace"), w.tail()
    finally:
        w.stop()
