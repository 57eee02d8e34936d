"""Cross-check with the vendored ``llama-fit-params -fitp on``: what llama.cpp itself would allocate.

It prints one line per device, ``<device> <model MiB> <context MiB> <compute MiB>``,
without loading weights.  Its compute figure is the graph buffer llama.cpp *reserves*,
which includes n_vocab × n_ubatch float logits; a chat fills one row of them, so the
plan's compute term (touched memory) is smaller by about that much.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..llamacpp.fitparams import FIT_TIMEOUT_S, fit_params, parse_rows
from .memory import DEFAULT_UBATCH, MIB
from .spec import ModelSpec


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


parse = parse_rows  # the one parser of the tool's rows (edgeq.fitparams)


def run(path: Path, ctx: int, *, cache_type: str = "f16", rpc: list[str] | None = None) -> list[tuple[str, int, int, int]]:
    """(device, model, context, compute) MiB that llama-fit-params gives ``path`` at ``ctx`` tokens."""
    res = fit_params(path, ctx, rpc, extra_args=["-ctk", cache_type, "-ctv", cache_type], timeout=FIT_TIMEOUT_S)
    return [(d.device, d.model_mib, d.context_mib, d.compute_mib) for d in res.devices]


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
