"""llama.cpp's RPC backend seen from outside: endpoints, a handshake probe, layer placement.

The engine side (registering servers with ggml before a model loads) lives in
``backends/llamacpp_rpc.py`` and the server in ``rpc_server``; this module needs
only sockets, so the checks before a run never import llama_cpp.
"""
from __future__ import annotations

import re
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import RpcError, UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50052
PROBE_TIMEOUT_S = 3.0
# The protocol our vendored ggml-rpc speaks (ggml/include/ggml-rpc.h; a test checks they agree).
PROTO_MAJOR, PROTO_MINOR = 7, 0
NO_AUTH_WARNING = ("ggml-rpc has no authentication or encryption: anyone who can reach this port can use this "
                   "machine's memory and CPU through it; use it on a trusted network only.")
RESTART_HINT = "Check the server (`edgeq rpc-server` on that machine) and the address, then run again."

# Wire format (ggml-rpc.cpp): request = cmd u8 | size u64 | data; response = size u64 | data.
_CMD_GET_DEVICE_MEMORY, _CMD_HELLO, _CMD_DEVICE_COUNT = 11, 14, 15
_CONN_CAPS = 24  # bytes of transport capabilities in HELLO (all zero: plain TCP)


@dataclass
class DeviceMemory:
    free_bytes: int
    total_bytes: int


@dataclass
class ServerInfo:
    """What one server said in the handshake."""

    endpoint: str
    protocol: str  # "7.0.0"
    devices: list[DeviceMemory] = field(default_factory=list)


def parse_endpoints(text: str | Iterable[str] | None) -> list[str]:
    """``"host:port,host:port"`` → a checked list; a bare host gets the default port."""
    items = text.split(",") if isinstance(text, str) else list(text or [])
    if text is not None and items and not any(i.strip() for i in items):
        # `--rpc ","` used to run locally without a word: the user asked for servers and named none.
        raise UsageError(f"--rpc {text!r} names no server.", hint="Write e.g. --rpc 192.168.1.10:50052, or leave --rpc out.")
    out = []
    for raw in (i.strip() for i in items):
        if not raw:
            continue
        host, sep, port = raw.rpartition(":")
        if not sep:
            host, port = raw, str(DEFAULT_PORT)
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--rpc {raw!r} is not HOST:PORT.", hint="Write e.g. --rpc 192.168.1.10:50052,192.168.1.11:50052.")
        ep = f"{host}:{int(port)}"
        if ep in out:
            raise UsageError(f"--rpc names {ep} twice.", hint="List each server once.")
        out.append(ep)
    return out


def _split(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


def reachable(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None if something accepts TCP connections at ``endpoint``, else why not (one phrase)."""
    try:
        socket.create_connection(_split(endpoint), timeout=timeout).close()
        return None
    except OSError as e:
        return _why(e, timeout)


def _why(e: OSError, timeout: float) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (nothing listens on that port)"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout:g} s (host down, unreachable or firewalled)"
    return (e.strerror or str(e)).lower()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed the connection")
        buf += chunk
    return buf


def _call(sock: socket.socket, cmd: int, data: bytes, expect: int) -> bytes:
    sock.sendall(struct.pack("<BQ", cmd, len(data)) + data)
    (size,) = struct.unpack("<Q", _recv_exact(sock, 8))
    if size != expect:
        raise ValueError(f"answered {size} bytes where ggml-rpc sends {expect}")
    return _recv_exact(sock, size)


def probe(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> ServerInfo:
    """Connect, do ggml-rpc's HELLO, and ask for device memory; ``RpcError`` naming the server if any step fails.

    llama.cpp aborts the whole process when a server cannot be reached or speaks
    another protocol version, so every server is checked this way first.
    """
    why = None
    try:
        sock = socket.create_connection(_split(endpoint), timeout=timeout)
    except OSError as e:
        raise RpcError(endpoint, f"cannot reach RPC server {endpoint}: {_why(e, timeout)}.", hint=RESTART_HINT) from None
    with sock:
        try:
            hello = _call(sock, _CMD_HELLO, bytes(_CONN_CAPS), 4 + _CONN_CAPS)
            major, minor, patch = hello[0], hello[1], hello[2]
            if major != PROTO_MAJOR or minor > PROTO_MINOR:
                raise RpcError(endpoint, f"RPC server {endpoint} speaks ggml-rpc protocol {major}.{minor}.{patch}; "
                               f"this edgeq's llama.cpp speaks {PROTO_MAJOR}.{PROTO_MINOR}.x.",
                               hint="Run the same llama.cpp build on every machine (edgeq rpc-server from this edgeq).")
            (n_dev,) = struct.unpack("<I", _call(sock, _CMD_DEVICE_COUNT, b"", 4))
            devices = [DeviceMemory(*struct.unpack("<QQ", _call(sock, _CMD_GET_DEVICE_MEMORY, struct.pack("<I", d), 16)))
                       for d in range(n_dev)]
        except TimeoutError:
            why = (f"it accepted the connection but did not answer the ggml-rpc handshake within {timeout:g} s "
                   "(not a ggml-rpc server, or busy with another client)")
        except (ConnectionError, ValueError, struct.error) as e:
            why = f"it does not speak the ggml-rpc protocol ({e})"
    if why:
        raise RpcError(endpoint, f"RPC server {endpoint} is not usable: {why}.", hint=RESTART_HINT)
    return ServerInfo(endpoint, f"{major}.{minor}.{patch}", devices)


def probe_all(endpoints: list[str], timeout: float = PROBE_TIMEOUT_S) -> list[ServerInfo]:
    """Probe every server before anything loads, so a bad one is named instead of aborting llama.cpp."""
    return [probe(ep, timeout) for ep in endpoints]


def first_unreachable(endpoints: list[str], timeout: float = PROBE_TIMEOUT_S) -> tuple[str, str] | None:
    """(endpoint, reason) of the first server that no longer accepts connections, if any."""
    for ep in endpoints:
        why = reachable(ep, timeout)
        if why:
            return ep, why
    return None


def went_away(endpoints: list[str], during: str | None = None) -> RpcError | None:
    """The error naming the first server that stopped accepting connections, if one did.

    llama.cpp aborts the whole process when a server vanishes; this names the
    server instead of quoting the abort (bench rows and `edgeq run` alike).
    """
    gone = first_unreachable(endpoints) if endpoints else None
    if gone is None:
        return None
    when = f" during {during}" if during else ""
    return RpcError(gone[0], f"RPC server {gone[0]} went away{when}: {gone[1]}.", hint=RESTART_HINT)


def layer_split(n_layer: int, n_servers: int, weights: list[float] | None, *, local: bool) -> tuple[int, list[float]]:
    """``(n_gpu_layers, tensor_split)`` for llama.cpp: layers over [this machine,] server 1..n by ``weights``.

    llama.cpp offloads the *last* ``n_gpu_layers`` of ``n_layer + 1`` (the output
    layer counts) and splits them over the servers by ``tensor_split``; the rest
    stay on this machine's CPU.  Default weights are equal shares.
    """
    n_dev = n_servers + (1 if local else 0)
    w = list(weights) if weights else [1.0] * n_dev
    if len(w) != n_dev:
        who = "this machine then each server" if local else "each server (--no-local)"
        raise UsageError(f"--tensor-split has {len(w)} values; it needs {n_dev}, one for {who}.")
    if any(x < 0 for x in w) or sum(w[1 if local else 0:]) <= 0:
        raise UsageError("--tensor-split weights must be >= 0, with some weight on the servers.")
    servers = w[1:] if local else w
    if not local:
        return -1, servers
    offload = round((n_layer + 1) * sum(servers) / sum(w))
    return max(1, min(offload, n_layer + 1)), servers


@dataclass
class DevicePlacement:
    """Where a share of the model went: this machine (endpoint None) or one RPC server."""

    device: str  # llama.cpp's device name: CPU, RPC0, RPC1, ...
    endpoint: str | None
    layers: list[int] = field(default_factory=list)  # block indices; n_layer is the output layer
    model_mib: float = 0.0
    kv_mib: float = 0.0
    compute_mib: float = 0.0


_LAYER = re.compile(r"layer\s+(\d+) assigned to device (\w+)")
_BUFFER = re.compile(r":\s+(\S+)\s+(model|KV|compute) buffer size =\s*([\d.]+) MiB")
_BRACKET = re.compile(r"\[(.+)\]$")
LOG_PATTERN = re.compile(r"assigned to device|buffer size =|offloaded \d+/\d+ layers")  # lines worth keeping


def parse_placement(lines: Iterable[str], devices: dict[str, str]) -> list[DevicePlacement]:
    """Read llama.cpp's load log: which device got each layer, and each buffer's MiB.

    ``devices`` maps RPC device names (RPC0…) to endpoints; buffers are named
    ``RPC0[host:port]`` (device index on that server) or CPU/CPU_Mapped/CPU_REPACK.
    """
    out: dict[str, DevicePlacement] = {"local": DevicePlacement("CPU", None)}
    for ep in dict.fromkeys(devices.values()):
        name = next(d for d, e in devices.items() if e == ep)
        out[ep] = DevicePlacement(name, ep)
    for line in lines:
        if m := _LAYER.search(line):
            where = devices.get(m.group(2))
            out[where or "local"].layers.append(int(m.group(1)))
        elif m := _BUFFER.search(line):
            b = _BRACKET.search(m.group(1))
            key = b.group(1) if b and b.group(1) in out else "local"
            attr = {"model": "model_mib", "KV": "kv_mib", "compute": "compute_mib"}[m.group(2)]
            setattr(out[key], attr, round(getattr(out[key], attr) + float(m.group(3)), 2))
    return list(out.values())


def layer_ranges(layers: list[int], n_layer: int) -> str:
    """``[0,1,2,5,30]`` with 30 layers → ``"0–2, 5 + output"``."""
    blocks = sorted(x for x in layers if x < n_layer)
    parts, start = [], None
    for i, x in enumerate(blocks):
        start = x if start is None else start
        if i + 1 == len(blocks) or blocks[i + 1] != x + 1:
            parts.append(str(x) if start == x else f"{start}–{x}")
            start = None
    text = ", ".join(parts) or "none"
    return text + (" + output" if n_layer in layers else "")
