"""Predicted tokens per second: a memory-bandwidth roofline for generation, a compute one for prompts.

Generating a token reads every weight once (the token embedding only as one row,
unless it doubles as the output matrix) plus the KV cache filled so far.  Uncalibrated,
tok/s ≈ efficiency × bandwidth ÷ bytes per token.  On a CPU the matrix-vector kernels
differ so much per type (Q4_0's repacked path, Q8_0, the K-quants and legacy Q5_0/Q5_1,
F16) that one efficiency cannot fit them all: a small model is bound by dequantising,
not by reading.  So the calibrated prediction splits the bytes read per token by
kernel family (``FAMILIES``) and adds a fixed cost per token (graph, scheduling,
sampling):

    seconds per token = overhead + Σ_family bytes_family ÷ (bandwidth × efficiency_family)

``calibrate.fit_families`` fits the efficiencies and the overhead to bench results.
Within a family, types differ too (Q5_1 generates slower than F16 on x86 at 38% of its
bytes): each type's bytes count at its kernel's speed relative to Q4_0 on the target
(``kernels``), so a family's efficiency is Q4_0's-equivalent and a device's one figure
serves every type.  A prompt is processed in batches, so it is bound by arithmetic
instead: ≈ efficiency × FLOP/s ÷ Σ (2 × matmul weights of each type ÷ its kernel's
relative rate, + attention) per token.  Both are predictions.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from ..sources.gguf import bytes_read_per_token, ties_output
from . import kernels
from .memory import CACHE_TYPES
from .spec import ModelSpec

# Context filled when generation speed is quoted (llama-bench's tg128 after a short prompt).
DEFAULT_FILL_TOKENS = 256

# Kernel families: ggml types whose CPU matrix-vector kernels run at a similar speed per byte.  "K" holds the
# K-quants, i-quants and legacy Q4_1/Q5_0/Q5_1 together: a K-quant file of a model whose rows are not a multiple
# of 256 is half legacy fallbacks, so calibration runs could not tell the two apart anyway.
FAMILIES = ("F32", "F16", "Q8_0", "Q4_0", "K")
_FAMILY_OF = {"F32": "F32", "F16": "F16", "BF16": "F16", "Q8_0": "Q8_0", "Q4_0": "Q4_0", "IQ4_NL": "Q4_0"}
_FLOAT = {"F32", "F16"}
_CACHE_FAMILY = {"f16": "F16", "q8_0": "Q8_0"}  # the KV cache is read by the attention kernels of its type


def family(ggml_type: str) -> str:
    """The kernel family of a ggml type (``FAMILIES``); everything not named is "K"."""
    return _FAMILY_OF.get(ggml_type.upper(), "K")


@dataclass
class SpeedEstimate:
    bytes_per_token: int
    weights_per_token: int
    tg_tps: float
    tg_bound: str  # "memory" (uncalibrated roofline) or the kernel family taking most of a token's time
    pp_tps: float | None
    tg_efficiency: float
    pp_efficiency: float | None


def _read_bytes(spec: ModelSpec, tensor_bytes: list[int]) -> list[int]:
    return bytes_read_per_token(spec.tensors, tensor_bytes)


def kv_bytes_per_token(spec: ModelSpec, *, fill_tokens: int = DEFAULT_FILL_TOKENS, cache_type: str = "f16") -> int:
    """KV cache attended to when generating after ``fill_tokens`` tokens."""
    return int(spec.n_layer * fill_tokens * spec.n_head_kv * (spec.head_dim_k + spec.head_dim_v)
               * CACHE_TYPES[cache_type])


def bytes_per_token(spec: ModelSpec, tensor_bytes: list[int], *, fill_tokens: int = DEFAULT_FILL_TOKENS,
                    cache_type: str = "f16") -> int:
    """Weights read for one generated token, plus the KV cache attended to."""
    return sum(_read_bytes(spec, tensor_bytes)) + kv_bytes_per_token(spec, fill_tokens=fill_tokens,
                                                                     cache_type=cache_type)


def family_bytes(spec: ModelSpec, types: list[str], tensor_bytes: list[int], *,
                 fill_tokens: int = DEFAULT_FILL_TOKENS, cache_type: str = "f16") -> dict[str, int]:
    """``bytes_per_token`` split by kernel family (the KV cache counts under its cache type's family)."""
    out = dict.fromkeys(FAMILIES, 0)
    for ty, b in zip(types, _read_bytes(spec, tensor_bytes)):
        out[family(ty)] += b
    out[_CACHE_FAMILY[cache_type]] += kv_bytes_per_token(spec, fill_tokens=fill_tokens, cache_type=cache_type)
    return out


def type_bytes(spec: ModelSpec, types: list[str], tensor_bytes: list[int], *,
               fill_tokens: int = DEFAULT_FILL_TOKENS, cache_type: str = "f16") -> dict[str, int]:
    """``bytes_per_token`` split by ggml type (the KV cache under its cache type: F16 or Q8_0)."""
    out: dict[str, int] = {}
    for ty, b in zip(types, _read_bytes(spec, tensor_bytes)):
        if b:
            out[ty.upper()] = out.get(ty.upper(), 0) + b
    kv = _CACHE_FAMILY[cache_type]
    out[kv] = out.get(kv, 0) + kv_bytes_per_token(spec, fill_tokens=fill_tokens, cache_type=cache_type)
    return out


def effective_bytes(by_type: dict[str, int], kind: str | None) -> dict[str, int]:
    """Bytes per family, each type's counted at Q4_0's speed on ``kind`` (``kernels.factors``): a type whose
    kernel reads half as fast counts twice its bytes."""
    out = dict.fromkeys(FAMILIES, 0)
    for ty, b in by_type.items():
        out[family(ty)] += int(b / kernels.factors(kind, ty)[0])
    return out


def weights_by_type(spec: ModelSpec, types: list[str]) -> dict[str, int]:
    """Weights multiplied per prompt token (``multiplied``: not the output matrix), by the type each is stored in."""
    tied = ties_output(spec.tensors)
    out: dict[str, int] = {}
    for t, ty in zip(spec.tensors, types):
        if len(t.shape) >= 2 and multiplied(t.name, tied)[0]:
            out[ty.upper()] = out.get(ty.upper(), 0) + t.n_elements
    return out


def attention_flops(spec: ModelSpec, *, fill_tokens: int = DEFAULT_FILL_TOKENS) -> float:
    return 2.0 * spec.n_layer * fill_tokens * spec.n_head * (spec.head_dim_k + spec.head_dim_v)


def effective_flops(by_type: dict[str, int], attention: float, kind: str | None) -> float:
    """FLOP per prompt token, each type's counted at Q4_0's rate on ``kind`` (attention runs in F16 kernels)."""
    return (sum(2.0 * w / kernels.factors(kind, ty)[1] for ty, w in by_type.items())
            + attention / kernels.factors(kind, "F16")[1])


def matmul_flops_per_token(spec: ModelSpec, *, fill_tokens: int = DEFAULT_FILL_TOKENS) -> float:
    """FLOP per prompt token: 2 per weight multiplied (``weights_by_type``) + attention scores and sums."""
    weights = sum(weights_by_type(spec, [t.base_type for t in spec.tensors]).values())
    return 2.0 * weights + attention_flops(spec, fill_tokens=fill_tokens)


def matmul_weights(spec: ModelSpec) -> int:
    """Weights multiplied per generated token: every matrix but a looked-up (untied) token embedding."""
    tied = ties_output(spec.tensors)
    return sum(t.n_elements for t in spec.tensors if len(t.shape) >= 2 and multiplied(t.name, tied)[1])


def multiplied(name: str, tied: bool) -> tuple[bool, bool]:
    """Whether a matrix is multiplied for every token of a prompt's batch, and for every generated token.

    An untied token embedding is looked up (one row a token), never multiplied.  The output matrix (the token
    embedding when tied) turns only the batch's last position into logits, as llama-bench and a generation ask:
    per generated token it is read whole, per prompt token almost not at all."""
    output = name == "output.weight" or (tied and name == "token_embd.weight")
    looked_up = not tied and name == "token_embd.weight"
    return not (output or looked_up), not looked_up


def tg_tps(fam_bytes: dict[str, int], *, bandwidth_gbps: float, efficiency: float,
           family_efficiency: dict[str, float] | None = None, overhead_s: float = 0.0) -> tuple[float, str]:
    """Tokens/s and what bounds it: overhead + each family's bytes at its own share of the bandwidth.

    A family missing from ``family_efficiency`` (no calibration point) runs at the median
    efficiency of the fitted families of its kind (float: F32/F16; quantized: the rest),
    or at ``efficiency``, the pooled one, when none of its kind was fitted.
    Uncalibrated (no family efficiencies) this is the plain roofline and the bound is
    "memory"; otherwise it is the family that takes the most time.
    """
    fe = family_efficiency or {}
    times = {f: b / (bandwidth_gbps * 1e9 * (fe.get(f) or _fallback(f, fe, efficiency)))
             for f, b in fam_bytes.items() if b}
    tps = 1.0 / (overhead_s + sum(times.values()))
    bound = max(times, key=times.get) if fe and times else "memory"  # type: ignore[arg-type]
    return tps, bound


def _fallback(fam: str, fitted: dict[str, float], pooled: float) -> float:
    kind = [e for f, e in fitted.items() if (f in _FLOAT) == (fam in _FLOAT)]
    return statistics.median(kind) if kind else pooled


def estimate(spec: ModelSpec, types: list[str], tensor_bytes: list[int], *, bandwidth_gbps: float,
             tg_efficiency: float, gflops: float | None, pp_efficiency: float | None,
             family_efficiency: dict[str, float] | None = None, overhead_s: float = 0.0,
             cache_type: str = "f16", fill_tokens: int = DEFAULT_FILL_TOKENS, kind: str | None = None) -> SpeedEstimate:
    """Generation and prompt speed of one quant (``types``/``tensor_bytes``: per tensor, as written) on a target of
    ``kind`` (``kernels.KINDS``; None: every type at Q4_0's speed per byte and per FLOP)."""
    by_type = type_bytes(spec, types, tensor_bytes, fill_tokens=fill_tokens, cache_type=cache_type)
    w = matmul_weights(spec)
    tg, bound = tg_tps(effective_bytes(by_type, kind), bandwidth_gbps=bandwidth_gbps, efficiency=tg_efficiency,
                       family_efficiency=family_efficiency, overhead_s=overhead_s)
    pp = None
    if gflops and pp_efficiency:
        flops = effective_flops(weights_by_type(spec, types), attention_flops(spec, fill_tokens=fill_tokens), kind)
        pp = pp_efficiency * gflops * 1e9 / flops
    return SpeedEstimate(sum(by_type.values()), w, round(tg, 2), bound, round(pp, 1) if pp else None, tg_efficiency,
                         pp_efficiency)
