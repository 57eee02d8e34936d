"""Peak RAM of llama.cpp running a model: weights + KV cache + compute buffers + runtime overhead.

The terms follow what llama.cpp allocates (llama-context.cpp, llama-kv-cache*.cpp) and
what a process actually touches, since RSS counts touched pages only:

* weights: the whole file is mmap'd and every page is read once per token (a tied
  embedding is read as the output matrix); on CPUs where ggml repacks a type into
  its own buffer (``CPU_REPACK``: Q4_0/Q4_K/IQ4_NL with AVX2, more with ARM dotprod)
  those tensors are resident twice, once as file pages, once repacked (RSS counts
  both; only the repacked copy must fit, the clean file pages are reclaimable);
* KV cache: cleared (so touched) at creation: layers × cells × (K + V head dims ×
  KV heads) × bytes per element; cells = ctx rounded up to 256, SWA layers keep
  only window + ubatch;
* compute: the graph buffer for one ubatch of prompt (flash attention on, one
  output row): activations, not the n_vocab × n_ubatch logits llama.cpp reserves
  but a chat never fills (``llama-fit-params`` counts those: see ``fitcheck``);
* overhead: the process, libraries and vocabulary structures; fitted from bench
  results when given (``calibrate``), else the default measured here.
"""
from __future__ import annotations

from dataclasses import dataclass

from .spec import ModelSpec

MIB = 1024**2
# Bytes per cached element: llama.cpp's --cache-type-k/-v names.
CACHE_TYPES = {"f16": 2.0, "bf16": 2.0, "f32": 4.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
DEFAULT_UBATCH = 512
# A python process with llama-cpp-python loaded (42 MiB here) plus llama.cpp's own allocations.
DEFAULT_OVERHEAD_BYTES = 56 * MIB
# llama.cpp keeps the vocabulary (token strings, maps, merges) in memory, a few times its GGUF size.
VOCAB_FACTOR = 3.0
# Activations per token of a ubatch, in floats: residual, norm, attention in/out, FFN gate/up/act.
_ACT_EMBD, _ACT_FF = 6, 3


@dataclass
class MemoryEstimate:
    ctx: int
    cache_type: str
    weights_bytes: int
    repacked_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    overhead_bytes: int
    total_bytes: int  # peak RSS
    required_bytes: int  # what must fit: the file pages of repacked tensors are clean, the kernel drops them
    projector_bytes: int = 0  # a vision-language model's projector and one image's encoder buffer (in the totals)


def kv_cells(ctx: int) -> int:
    """llama.cpp rounds the context up to a multiple of 256 (llama-context.cpp)."""
    return -(-ctx // 256) * 256


def kv_cache_bytes(spec: ModelSpec, ctx: int, cache_type: str = "f16", n_ubatch: int = DEFAULT_UBATCH) -> int:
    per_cell = spec.n_head_kv * (spec.head_dim_k + spec.head_dim_v) * CACHE_TYPES[cache_type]
    full = kv_cells(ctx)
    swa = kv_cells(min(ctx, spec.sliding_window + n_ubatch)) if spec.sliding_window else full
    cells = (spec.n_layer - spec.swa_layers) * full + spec.swa_layers * swa
    return int(round(cells * per_cell))


def compute_bytes(spec: ModelSpec, ctx: int, n_ubatch: int = DEFAULT_UBATCH) -> int:
    """Touched graph memory for one prompt ubatch (flash attention; one row of logits)."""
    n = min(n_ubatch, kv_cells(ctx))
    q_kv = (spec.n_head + 2 * spec.n_head_kv) * spec.head_dim_k
    floats = n * (_ACT_EMBD * spec.n_embd + _ACT_FF * spec.n_ff + q_kv) + spec.n_vocab
    return 4 * floats


def estimate(spec: ModelSpec, weights_bytes: int, *, ctx: int, cache_type: str = "f16", repacked_bytes: int = 0,
             overhead_bytes: int = DEFAULT_OVERHEAD_BYTES) -> MemoryEstimate:
    """Peak resident bytes of one llama.cpp process serving ``ctx`` tokens of one sequence."""
    kv = kv_cache_bytes(spec, ctx, cache_type)
    comp = compute_bytes(spec, ctx)
    over = overhead_bytes + int(VOCAB_FACTOR * spec.metadata_bytes)
    total = weights_bytes + repacked_bytes + kv + comp + over
    return MemoryEstimate(ctx, cache_type, weights_bytes, repacked_bytes, kv, comp, over, total, total - repacked_bytes)
