"""The one table of llama.cpp quantization types edgeq knows.

Names are llama-quantize's.  ``base`` is the ggml tensor type most weights get
(``llama_ftype_get_default_type`` in llama-quant.cpp; a test parses that switch);
K-quants and IQ4_XS pack 256 weights per block, so a weight row whose length is
not a multiple of 256 cannot use them and llama.cpp falls back to a legacy type
(``FALLBACK``).  That is why "Q4_K_M" of a model with hidden size 576 is mostly
Q5_0: edgeq reports it instead of hiding it.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError


@dataclass(frozen=True)
class QuantType:
    name: str
    base: str  # ggml type of most weight tensors
    block_size: int
    bits_per_weight: float  # of the base type alone; mixes add some
    needs_imatrix: bool = False
    float_type: bool = False


def _q(name: str, base: str, block: int, bpw: float, imatrix: bool = False) -> QuantType:
    return QuantType(name, base, block, bpw, imatrix, base in ("F32", "F16", "BF16"))


QUANT_TYPES: dict[str, QuantType] = {q.name: q for q in [
    _q("F32", "F32", 1, 32.0),
    _q("F16", "F16", 1, 16.0),
    _q("BF16", "BF16", 1, 16.0),
    _q("Q8_0", "Q8_0", 32, 8.5),
    _q("Q6_K", "Q6_K", 256, 6.5625),
    _q("Q5_K_M", "Q5_K", 256, 5.5),
    _q("Q5_K_S", "Q5_K", 256, 5.5),
    _q("Q5_1", "Q5_1", 32, 6.0),
    _q("Q5_0", "Q5_0", 32, 5.5),
    _q("Q4_K_M", "Q4_K", 256, 4.5),
    _q("Q4_K_S", "Q4_K", 256, 4.5),
    _q("Q4_1", "Q4_1", 32, 5.0),
    _q("Q4_0", "Q4_0", 32, 4.5),
    _q("IQ4_NL", "IQ4_NL", 32, 4.5),
    _q("IQ4_XS", "IQ4_XS", 256, 4.25),
    _q("Q3_K_L", "Q3_K", 256, 3.4375),
    _q("Q3_K_M", "Q3_K", 256, 3.4375),
    _q("Q3_K_S", "Q3_K", 256, 3.4375),
    _q("IQ3_M", "IQ3_S", 256, 3.4375),
    _q("IQ3_S", "IQ3_S", 256, 3.4375),
    _q("IQ3_XS", "IQ3_S", 256, 3.4375),
    _q("IQ3_XXS", "IQ3_XXS", 256, 3.0625, True),
    _q("Q2_K", "Q2_K", 256, 2.625),
    _q("Q2_K_S", "Q2_K", 256, 2.625, True),
    _q("IQ2_M", "IQ2_S", 256, 2.5625, True),
    _q("IQ2_S", "IQ2_XS", 256, 2.3125, True),
    _q("IQ2_XS", "IQ2_XS", 256, 2.3125, True),
    _q("IQ2_XXS", "IQ2_XXS", 256, 2.0625, True),
    _q("IQ1_M", "IQ1_M", 256, 1.75, True),
    _q("IQ1_S", "IQ1_S", 256, 1.5625, True),
    _q("TQ2_0", "TQ2_0", 256, 2.0625),
    _q("TQ1_0", "TQ1_0", 256, 1.6875),
]}

# llama-quantize accepts these short names for the _M mixes.
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}

# What llama.cpp uses when a row is not a multiple of the base type's block
# (llama-quant.cpp, "fallback quantization").
FALLBACK = {
    "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "Q3_K": "Q4_0", "Q2_K": "Q4_0",
    "IQ4_XS": "IQ4_NL", "IQ3_S": "IQ4_NL", "IQ3_XXS": "IQ4_NL", "IQ2_S": "IQ4_NL",
    "IQ2_XS": "IQ4_NL", "IQ2_XXS": "IQ4_NL", "IQ1_M": "IQ4_NL", "IQ1_S": "IQ4_NL",
    "TQ1_0": "Q4_0", "TQ2_0": "Q4_0",
}

# 32-weight block types: where a 256-block type was asked for, these are fallbacks.
LEGACY_TYPES = frozenset({"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL"})

FLOAT_OUTTYPES = {"f16": "F16", "bf16": "BF16", "f32": "F32"}


def parse_quant(name: str) -> QuantType:
    """Return the table entry for a user-typed name (case-insensitive, aliases allowed)."""
    key = name.strip().upper().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in QUANT_TYPES:
        valid = ", ".join(QUANT_TYPES)
        raise UsageError(f"unknown quantization type {name!r}.", hint=f"Valid types: {valid}.")
    return QUANT_TYPES[key]


def parse_quants(names: list[str] | tuple[str, ...]) -> list[QuantType]:
    """Parse names (each may be comma-separated), keeping order and dropping repeats."""
    seen: dict[str, QuantType] = {}
    for item in names:
        for part in item.split(","):
            if part.strip():
                q = parse_quant(part)
                seen.setdefault(q.name, q)
    return list(seen.values())
