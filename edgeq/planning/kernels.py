"""Speed per tensor type, not per byte: each type's kernel on a kind of target, relative to Q4_0's.

Bytes do not predict speed (issue 33): on x86 Q4_0, Q4_K and IQ4_NL are repacked for wide kernels and Q4_1/Q5_1
are not; Q5_K processes prompts 2.7× faster than Q5_0 at the same bytes.  So each type has two factors on each
kind of target (``KINDS``), both relative to Q4_0 there:

- ``tg``: the share of memory bandwidth its matrix-vector kernel reaches (generation reads every weight once);
- ``pp``: the FLOP/s its matrix-matrix kernel reaches (prompts are compute-bound).

A device's ``tg_efficiency`` / ``pp_efficiency`` are Q4_0's; a type's are those × its factor.  ``calibrate`` fits
the absolute level to bench results and keeps these ratios for the types the runs did not cover.
"""
from __future__ import annotations

REFERENCE = "Q4_0"
KINDS = ("x86", "arm-dotprod", "metal")

# x86 (AVX2/AVX-512, repacked Q4_0/Q4_K/IQ4_NL): measured here, pure files of a 466M-parameter Llama whose rows fit
# every block (hidden 2048), llama-bench tg16 / pp128, one thread, interleaved rounds on a quiet machine; each run's
# medians over its own level, the median over four runs (a type's ratio moved up to 12% between them), relative
# to Q4_0: benchmarks/type_speed.py table, benchmarks/results/types.json.  F32 and BF16 were not measured: F16's.
# {type: (tg, pp)}.
X86: dict[str, tuple[float, float]] = {
    "F32": (1.50, 0.68), "BF16": (1.50, 0.68), "F16": (1.50, 0.68), "Q8_0": (1.02, 0.81), "Q6_K": (1.41, 1.44),
    "Q5_K": (0.92, 1.77), "Q5_0": (0.59, 0.65), "Q5_1": (0.53, 0.28), "Q4_K": (1.15, 1.07), "Q4_0": (1.00, 1.00),
    "Q4_1": (0.48, 0.31), "IQ4_XS": (0.72, 1.85), "IQ4_NL": (0.94, 0.99), "Q3_K": (0.66, 1.53), "Q2_K": (0.80, 0.69),
}
X86_SOURCE = ("measured on this project's 2-core AMD EPYC VM, one thread (benchmarks/type_speed.py, "
              "benchmarks/results/types.json)")
# Q4_0's own efficiency there: of edgeq-bandwidth's one-thread reading, and of the cores × GHz × FLOP/cycle estimate.
X86_TG_EFFICIENCY, X86_PP_EFFICIENCY = 0.63, 0.47

# ARM with dotprod (Pi 5's Cortex-A76): repack.cpp repacks Q4_0, Q4_K, Q5_K, Q6_K, IQ4_NL and Q8_0 there
# (plan/devices.py).  Not measured: generation per type as on x86; in prompts the repacked types at Q4_0's rate and
# the types without a repacked path losing what they lose on x86.
ARM_DOTPROD: dict[str, tuple[float, float]] = {
    **{t: (f[0], 1.0) for t, f in X86.items()},
    "F32": (1.0, 0.5), "F16": (1.0, 0.6), "BF16": (1.0, 0.6),
    "Q5_0": X86["Q5_0"], "Q5_1": X86["Q5_1"], "Q4_1": X86["Q4_1"], "IQ4_XS": X86["IQ4_XS"], "Q2_K": X86["Q2_K"],
    "Q3_K": X86["Q3_K"],
}
ARM_SOURCE = ("assumption: generation per type as measured on x86; prompts at Q4_0's rate for the types repack.cpp "
              "repacks with NEON + dotprod, the others at their x86 factors; calibrate with `edgeq bench` on the device")
# Metal: every type has a simdgroup kernel and none is repacked; generation is bound by unified memory.
METAL: dict[str, tuple[float, float]] = {t: (1.0, 1.0) for t in X86}
METAL_SOURCE = ("assumption: ggml-metal has a kernel for every type and repacks none, so no type is assumed faster "
                "per byte than another; calibrate with `edgeq bench` on the device")

TABLES = {"x86": X86, "arm-dotprod": ARM_DOTPROD, "metal": METAL}
SOURCES = {"x86": X86_SOURCE, "arm-dotprod": ARM_SOURCE, "metal": METAL_SOURCE}


def factors(kind: str | None, ggml_type: str) -> tuple[float, float]:
    """(tg, pp) of one type relative to Q4_0 on ``kind``; 1.0 where the kind or the type is not in the table."""
    return TABLES.get(kind or "", {}).get(ggml_type.upper(), (1.0, 1.0))


def kind_of(backend: str, repack_types: list[str]) -> str:
    """A device's kind from its backend and the types ggml repacks on its CPU."""
    if backend == "metal":
        return "metal"
    return "arm-dotprod" if "Q8_0" in repack_types else "x86"
