"""Per-device memory a GGUF would need, from llama.cpp's own estimate (``llama-fit-params -fitp on``).

With RPC servers this says how many MiB of weights, KV cache and compute buffers
each server would hold, without loading the model anywhere.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from . import find_toolchain, run_tool
from .rpc import ServerInfo, parse_endpoints, probe_all

FIT_TIMEOUT_S = 600
# After "printing estimated memory", one line per device: "<device> <model MiB> <context MiB> <compute MiB>".
# A device name can hold its server: "RPC0[127.0.0.1:50052]".
_ROW = re.compile(r"^(?P<device>\S.*?)\s+(?P<model>\d+)\s+(?P<context>\d+)\s+(?P<compute>\d+)\s*$")
_START = "printing estimated memory"


@dataclass
class DeviceFit:
    device: str  # llama.cpp's name: RPC0, RPC1, ... or Host (this machine's RAM)
    endpoint: str | None  # host:port for an RPC server, None for this machine
    model_mib: int
    context_mib: int  # KV cache (and other per-context state)
    compute_mib: int
    free_mib: int | None = None  # what the server reported free (servers on one box all report the same RAM)

    @property
    def total_mib(self) -> int:
        return self.model_mib + self.context_mib + self.compute_mib


@dataclass
class FitResult:
    model: str
    n_ctx: int
    rpc: list[str] = field(default_factory=list)
    devices: list[DeviceFit] = field(default_factory=list)


def rpc_device_names(servers: list[ServerInfo]) -> dict[str, tuple[str, int | None]]:
    """llama.cpp names RPC devices RPC0, RPC1, ... in the order servers are given: name → (endpoint, free MiB)."""
    names: dict[str, tuple[str, int | None]] = {}
    for s in servers:
        for d in s.devices or [None]:  # type: ignore[list-item]
            names[f"RPC{len(names)}"] = (s.endpoint, d.free_bytes // 2**20 if d else None)
    return names


def parse_rows(lines: list[str]) -> list[tuple[str, int, int, int]]:
    """(device, model, context, compute) MiB per device: the rows after the tool's "printing estimated memory"."""
    started = not any(_START in line for line in lines)  # the tool's log may be elsewhere: then every row counts
    out = []
    for line in lines:
        if _START in line:
            started = True
        elif started and (m := _ROW.match(line.strip())):
            out.append((m["device"], int(m["model"]), int(m["context"]), int(m["compute"])))
    return out


def parse_fit_output(lines: list[str], servers: list[ServerInfo]) -> list[DeviceFit]:
    names = rpc_device_names(servers)
    out = []
    for dev, model, context, compute in parse_rows(lines):
        ep, free = names.get(dev.split("[", 1)[0], (None, None))
        out.append(DeviceFit(dev, ep, model, context, compute, free))
    return out


def fit_params(model: str | Path, ctx: int, rpc: str | list[str] | None = None, *,
               extra_args: list[str] | None = None, timeout: float = FIT_TIMEOUT_S) -> FitResult:
    """Ask llama.cpp how many MiB of weights, context and compute each device would hold.

    ``rpc`` servers are probed first (llama.cpp aborts on an unreachable one) and
    then passed as ``--rpc``; all layers go to the servers, as ``llama-fit-params``
    places them by default.  ``extra_args`` go to the tool as they are (e.g.
    ``["-ngl", "20", "-ts", "1,2"]``).
    """
    path = Path(model).expanduser()
    if not path.is_file():
        raise UsageError(f"{path} does not exist.", hint="Pass a .gguf file.")
    endpoints = parse_endpoints(rpc)
    servers = probe_all(endpoints)
    exe = find_toolchain().tool("llama-fit-params")
    argv = [str(exe), "-m", str(path), "-fitp", "on", "-c", str(ctx)]
    if endpoints:
        argv += ["--rpc", ",".join(endpoints)]
    lines: list[str] = []
    run_tool(argv + list(extra_args or []), name="llama-fit-params", timeout=timeout,
             on_line=lambda line: lines.append(line) if _START in line or _ROW.match(line.strip()) else None)
    return FitResult(str(path), ctx, endpoints, parse_fit_output(lines, servers))
