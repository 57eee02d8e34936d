"""``edgeq rpc-server``: ggml-rpc-server in the foreground, on loopback unless told otherwise; and one in the
background for a check (``background_server``)."""
from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .. import system
from ..errors import EdgeqError, ToolchainError, UsageError
from .build import find_toolchain
from .process import child_options, run_tool, stop_process, tie
from .rpc import DEFAULT_HOST, DEFAULT_PORT, NO_AUTH_WARNING, reachable


def is_loopback(host: str) -> bool:
    """True when ``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        addrs = {a[4][0] for a in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return False
    return bool(addrs) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addrs)


def numeric_host(host: str) -> str:
    """``host`` as the IP address ggml-rpc-server can bind (a name is resolved here, once)."""
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare)
        return bare
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(bare, None, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UsageError(f"cannot resolve --host {host}: {e.strerror}.", hint="Pass an address of this machine.") from e
    v4 = [i[4][0] for i in infos if i[0] == socket.AF_INET]
    return str(v4[0] if v4 else infos[0][4][0])


def check_bind(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback address unless the caller said it knows the protocol has no authentication."""
    if not is_loopback(host) and not allow_remote:
        raise UsageError(f"refusing to listen on {host}: {NO_AUTH_WARNING}",
                         hint="Add --allow-remote to do it anyway (trusted networks only).")


def server_argv(host: str, port: int, threads: int, cache: bool) -> list[str]:
    exe = find_toolchain().tool("ggml-rpc-server")
    return [str(exe), "-H", host, "-p", str(port), "-t", str(threads)] + (["-c"] if cache else [])


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, threads: int | None = None, cache: bool = False,
          cache_dir: str | None = None, allow_remote: bool = False,
          on_line: Callable[[str], None] | None = None) -> int:
    """Run ``ggml-rpc-server`` in the foreground until SIGINT/SIGTERM; return the signal that stopped it.

    Anything but loopback needs ``allow_remote``: the protocol has no authentication.
    """
    check_bind(host, allow_remote)
    host = numeric_host(host)  # ggml-rpc-server takes an address only: "localhost" made it fail to bind
    if not 0 < port < 65536:
        raise UsageError(f"--port {port} is not a TCP port.")
    check_port(host, port)
    argv = server_argv(host, port, threads or system.default_threads(), cache)
    stopped: list[int] = []

    def stop(signum: int, frame: object) -> None:
        stopped.append(signum)
        raise KeyboardInterrupt

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        tail = run_tool(argv, name="ggml-rpc-server", on_line=on_line,
                        env={"LLAMA_CACHE": cache_dir} if cache_dir else None)
    except KeyboardInterrupt:  # run_tool has already stopped the server
        return stopped[0] if stopped else signal.SIGINT
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    # It only ends on our signal; it exits 0 even when it could not listen.
    why = next((ln for ln in tail if "fail" in ln.lower() or "error" in ln.lower()), tail[-1] if tail else "no output")
    raise EdgeqError(f"ggml-rpc-server stopped by itself: {why.strip()}")


def check_port(host: str, port: int) -> None:
    """Fail before starting the server if the address is not ours or the port is taken."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ggml-rpc-server does
            s.bind((host.strip("[]"), port))
    except socket.gaierror as e:
        raise UsageError(f"cannot listen on {host}: {e.strerror}.", hint="Pass an address of this machine.") from e
    except OSError as e:
        hint = "Pick another --port, or stop the other server." if e.errno == errno.EADDRINUSE else \
            "Pass an address of this machine (see `ip addr`)."
        raise UsageError(f"cannot listen on {host}:{port}: {(e.strerror or str(e)).lower()}.", hint=hint) from e


@contextlib.contextmanager
def background_server(argv: Sequence[str | os.PathLike[str]], threads: int, *,
                      start_timeout: float = 120) -> Iterator[tuple[str, list[str]]]:
    """Run a ``ggml-rpc-server`` command (under an emulator, say) on a free loopback port while the block runs.

    Yields its endpoint and a list that holds its log once the block is done; the server is stopped on the way out.
    """
    with socket.socket() as s:  # a free port on loopback
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"127.0.0.1:{port}"
    lines: list[str] = []
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([str(a) for a in argv] + ["-H", "127.0.0.1", "-p", str(port), "-t", str(threads)],
                                stdout=log, stderr=subprocess.STDOUT, text=True, **child_options())
        tie(proc.pid)
        try:
            deadline = time.monotonic() + start_timeout
            while reachable(endpoint, timeout=1.0):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise ToolchainError(f"{Path(str(argv[-1])).name} did not start listening on {endpoint}: "
                                         f"{(log.read().strip().splitlines() or ['no output'])[-1]}")
                time.sleep(0.5)
            yield endpoint, lines
        finally:
            stop_process(proc)
            log.seek(0)
            lines += log.read().splitlines()
