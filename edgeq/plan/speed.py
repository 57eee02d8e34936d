"""Predicted tokens per second: a memory-bandwidth roofline for generation, a compute one for prompts.

Generating a token reads every weight once (the token embedding only as one row,
unless it doubles as the output matrix) plus the KV cache filled so far, so
tok/s ≈ efficiency × bandwidth ÷ bytes per token.  On a slow CPU a small model's
matrix-vector products are bound by arithmetic instead (dequantising each weight
costs more than reading it): when bench results give that ceiling (weights per
second), the slower of the two bounds is the prediction.  A prompt is processed in
batches, so it is bound by arithmetic instead: ≈ efficiency × FLOP/s ÷ (2 ×
matmul weights + attention) per token.  Both are predictions; ``calibrate`` fits
the two efficiencies to this machine's bench results.
"""
from __future__ import annotations

from dataclasses import dataclass

from .memory import CACHE_TYPES
from .source import ModelSpec

# Context filled when generation speed is quoted (llama-bench's tg128 after a short prompt).
DEFAULT_FILL_TOKENS = 256


@dataclass
class SpeedEstimate:
    bytes_per_token: int
    weights_per_token: int
    tg_tps: float
    tg_bound: str  # "memory" | "compute": which ceiling the prediction sits on
    pp_tps: float | None
    tg_efficiency: float
    pp_efficiency: float | None


def bytes_per_token(spec: ModelSpec, tensor_bytes: list[int], *, fill_tokens: int = DEFAULT_FILL_TOKENS,
                    cache_type: str = "f16") -> int:
    """Weights read for one generated token, plus the KV cache attended to."""
    tied = not any(t.name == "output.weight" for t in spec.tensors)
    total = 0
    for t, b in zip(spec.tensors, tensor_bytes):
        if t.name == "token_embd.weight" and not tied:
            total += b // max(1, t.shape[-1])  # one row looked up
        else:
            total += b
    kv = spec.n_layer * fill_tokens * spec.n_head_kv * (spec.head_dim_k + spec.head_dim_v) * CACHE_TYPES[cache_type]
    return int(total + kv)


def matmul_flops_per_token(spec: ModelSpec, *, fill_tokens: int = DEFAULT_FILL_TOKENS) -> float:
    """2 FLOP per weight of every matrix multiplied (not the embedding lookup) + attention scores and sums."""
    return 2.0 * matmul_weights(spec) + 2 * spec.n_layer * fill_tokens * spec.n_head * (spec.head_dim_k + spec.head_dim_v)


def matmul_weights(spec: ModelSpec) -> int:
    """Weights multiplied per token: every matrix but a looked-up (untied) token embedding."""
    tied = not any(t.name == "output.weight" for t in spec.tensors)
    return sum(t.n_elements for t in spec.tensors if len(t.shape) >= 2 and (t.name != "token_embd.weight" or tied))


def tg_tps(bpt: int, weights: int, *, bandwidth_gbps: float, tg_efficiency: float,
           matvec_gweights: float | None = None) -> tuple[float, str]:
    """Tokens/s and its bound: bandwidth roofline, capped by the matrix-vector arithmetic ceiling if known."""
    mem = tg_efficiency * bandwidth_gbps * 1e9 / bpt
    if matvec_gweights and matvec_gweights * 1e9 / weights < mem:
        return matvec_gweights * 1e9 / weights, "compute"
    return mem, "memory"


def estimate(spec: ModelSpec, tensor_bytes: list[int], *, bandwidth_gbps: float, tg_efficiency: float,
             gflops: float | None, pp_efficiency: float | None, matvec_gweights: float | None = None,
             cache_type: str = "f16", fill_tokens: int = DEFAULT_FILL_TOKENS) -> SpeedEstimate:
    bpt = bytes_per_token(spec, tensor_bytes, fill_tokens=fill_tokens, cache_type=cache_type)
    w = matmul_weights(spec)
    tg, bound = tg_tps(bpt, w, bandwidth_gbps=bandwidth_gbps, tg_efficiency=tg_efficiency,
                       matvec_gweights=matvec_gweights)
    pp = None
    if gflops and pp_efficiency:
        pp = pp_efficiency * gflops * 1e9 / matmul_flops_per_token(spec, fill_tokens=fill_tokens)
    return SpeedEstimate(bpt, w, round(tg, 2), bound, round(pp, 1) if pp else None, tg_efficiency, pp_efficiency)
