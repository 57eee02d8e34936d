"""Cross-check with the vendored ``llama-fit-params -fitp on``: what llama.cpp itself would allocate.

It prints one line per device, ``<device> <model MiB> <context MiB> <compute MiB>``,
without loading weights.  Its compute figure is the graph buffer llama.cpp *reserves*,
which includes n_vocab × n_ubatch float logits; a chat fills one row of them, so the
plan's compute term (touched memory) is smaller by about that much.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .memory import DEFAULT_UBATCH, MIB
from .source import ModelSpec

_LINE = re.compile(r"^(?P<device>\S.*?)\s+(?P<model>\d+)\s+(?P<context>\d+)\s+(?P<compute>\d+)\s*$")


@dataclass
class FitParams:
    quant: str
    device: str
    model_mib: int
    context_mib: int
    compute_mib: int
    ours_weights_mib: float
    ours_kv_mib: float
    ours_compute_mib: float
    explanation: str


def parse(lines: list[str]) -> list[tuple[str, int, int, int]]:
    """(device, model, context, compute) MiB from the lines after fit-params' 'printing estimated memory'."""
    out = []
    started = False
    for line in lines:
        if "printing estimated memory" in line:
            started = True
            continue
        m = _LINE.match(line.strip()) if started else None
        if m:
            out.append((m["device"], int(m["model"]), int(m["context"]), int(m["compute"])))
    return out


def run(path: Path, ctx: int, *, cache_type: str = "f16", rpc: list[str] | None = None) -> list[tuple[str, int, int, int]]:
    from ..toolchain import find_toolchain, run_tool

    tc = find_toolchain()
    argv = [tc.tool("llama-fit-params"), "-m", path, "-fitp", "on", "-c", str(ctx), "-ctk", cache_type, "-ctv", cache_type]
    if rpc:
        argv += ["--rpc", ",".join(rpc)]
    return parse(run_tool(argv, name="llama-fit-params", tail_lines=64, timeout=120))


def compare(spec: ModelSpec, quant: str, rows: list[tuple[str, int, int, int]], *, tensor_bytes: int,
            kv_bytes: int, compute_bytes: int) -> list[FitParams]:
    logits = spec.n_vocab * DEFAULT_UBATCH * 4 / MIB
    out = []
    for device, model, context, compute in rows:
        why = (f"model: {model} MiB of tensors vs {tensor_bytes / MIB:.0f} MiB predicted; "
               f"context: {context} vs {kv_bytes / MIB:.0f} MiB; compute: llama.cpp reserves {compute} MiB, "
               f"{logits:.0f} MiB of it for {DEFAULT_UBATCH} rows of logits that one chat never fills, "
               f"so the plan counts {compute_bytes / MIB:.0f} MiB touched")
        out.append(FitParams(quant, device, model, context, compute, round(tensor_bytes / MIB, 1),
                             round(kv_bytes / MIB, 1), round(compute_bytes / MIB, 1), why))
    return out
