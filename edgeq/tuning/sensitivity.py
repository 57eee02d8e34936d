"""What each candidate type costs each tensor of *this* model, measured, and what that costs in KLD.

1. **Per-type quantizations.**  The F16 file is quantized once per candidate type with ``llama-quantize --pure``
   and the importance matrix, so every tensor takes that type where its rows allow it (a tensor that cannot,
   falls back and is recorded under the type it really got).
2. **Error per tensor and type.**  Each tensor is dequantized with gguf-py and compared with its F16 weights.
   The error is ``Σ (w - ŵ)² · F``, ``F`` the tensor's Fisher diagonal (``fisher``): twice the KLD the change
   would cost to second order, layer by layer, where it is amplified and where it is damped.  Where the
   Fisher diagonals cannot be had (no safetensors, a tensor the transformers passes do not reach), every
   tensor falls back to the importance matrix: ``Σ_rc (w - ŵ)² · E[x_c²]``, the expected squared change of
   its output (the diagonal approximation llama-quantize's own imatrix weighting makes); the token
   embedding, looked up rather than multiplied, then gets the mean squared error of a row.
3. **Calibration to KLD.**  Each per-type file is also a probe: its KLD to the F16 file on the calibration text
   (never the evaluation text) is measured, and non-negative least squares finds, per tensor group (embeddings
   and output, attention's inputs and output, the feed-forward's inputs and output), how much KLD a unit of
   error costs, plus a floor: the KLD every
   quantized file has even where its weights are exact, because ggml's quantized dot products round the
   activations too (to Q8_0/Q8_1).  The prediction for any recipe is the floor plus the sum over its tensors.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..output import Progress
from ..quants import QUANT_TYPES
from ..sources.gguf_header import read_header, tensor_arrays
from .fisher import read_fisher

if TYPE_CHECKING:
    import numpy as np

# ggml types the pinned llama-quantize can write per tensor, widest first.  IQ types need the importance matrix
# (tune always has one); IQ1_* are left out: no recipe llama.cpp ships uses them beyond a few tensors.
CANDIDATES = ("Q8_0", "Q6_K", "Q5_K", "Q5_1", "Q5_0", "Q4_K", "Q4_1", "Q4_0", "IQ4_NL", "IQ4_XS", "Q3_K", "IQ3_S",
              "IQ3_XXS", "Q2_K", "IQ2_XS", "IQ2_XXS")
# Tensor groups, each with its own KLD per unit of error: inputs and outputs of attention and of the feed-forward
# differ by an order of magnitude in it (measured on the embedded model: one coefficient for all of the
# feed-forward predicted a fifth of a tuned file's KLD).
GROUPS = ("embeddings", "attn_in", "attn_out", "ffn_in", "ffn_out")
# Below this many bits the token embedding is not quantized to the candidate (llama-quantize wants an imatrix
# entry for such types, and the embedding has none: it is looked up, not multiplied).
LOW_BIT = {"IQ3_XXS", "IQ2_XS", "IQ2_XXS"}


def ftype_for(tensor_type: str) -> str:
    """The llama-quantize type name whose tensors are ``tensor_type`` (``--pure``: all of them)."""
    if tensor_type in QUANT_TYPES:
        return tensor_type
    for q in QUANT_TYPES.values():
        if q.base == tensor_type:
            return q.name
    raise UsageError(f"unknown tensor type {tensor_type!r}.", hint=f"Use some of: {', '.join(CANDIDATES)}.")


def parse_types(text: list[str] | None) -> list[str]:
    """``--types``: candidate ggml tensor types (None: all of them).

    A llama-quantize recipe (Q4_K_M: a mix of Q4_K and Q6_K tensors) is not a tensor type, and tune never
    writes one's mix, so it is refused with the type it is based on; so is a list that names nothing."""
    if text is None:
        return list(CANDIDATES)
    names = [t.strip() for t in text if t.strip(" ,")]
    if not names:
        raise UsageError("--types names no type.", hint=f"Leave it out for all, or use some of: {', '.join(CANDIDATES)}.")
    out = []
    for t in names:
        key = t.upper().replace("-", "_")
        if key in QUANT_TYPES and key not in CANDIDATES and QUANT_TYPES[key].base in CANDIDATES:
            raise UsageError(f"--types: {t!r} is a llama-quantize recipe (a mix of tensor types), not a tensor type.",
                             hint=f"Name tensor types, e.g. {QUANT_TYPES[key].base}; tune chooses the mix itself.")
        if key not in CANDIDATES:
            raise UsageError(f"--types: {t!r} is not a type tune can choose.", hint=f"Use some of: {', '.join(CANDIDATES)}.")
        if key not in out:
            out.append(key)
    return out


def group_of(name: str) -> str:
    """The calibration group of a GGUF tensor name."""
    if name in ("token_embd.weight", "output.weight"):
        return "embeddings"
    if ".attn_" in name:
        return "attn_out" if ".attn_output" in name else "attn_in"
    return "ffn_out" if ".ffn_down" in name else "ffn_in"


def read_imatrix(path: Path) -> dict[str, np.ndarray]:
    """Per tensor, the mean squared activation of each input column (``in_sum2 / counts``), from a GGUF imatrix."""
    import numpy as np
    from gguf import GGUFReader

    r = GGUFReader(path)
    sums = {t.name[: -len(".in_sum2")]: np.asarray(t.data, dtype=np.float64) for t in r.tensors if t.name.endswith(".in_sum2")}
    counts = {t.name[: -len(".counts")]: np.asarray(t.data, dtype=np.float64) for t in r.tensors if t.name.endswith(".counts")}
    out = {}
    for name, s in sums.items():
        c = counts.get(name)
        if c is None or not c.size or c.reshape(-1)[0] <= 0:
            continue
        out[name] = (s.reshape(c.size, -1) / c.reshape(-1, 1)).mean(axis=0)  # experts: averaged over them
    return out


@dataclass
class TensorCost:
    """One tensor's options: for each type it can take, its bytes and its (importance-weighted) error."""

    name: str
    group: str
    shape: list[int]
    errors: dict[str, float] = field(default_factory=dict)


def tensor_errors(f16: Path, quantized: Path, weighting: str, weights: Path,
                  skip: frozenset[str] = frozenset()) -> dict[str, tuple[str, float]]:
    """{tensor: (type it got, error)} for every quantized tensor of ``quantized`` against ``f16``: the squared
    error weighted by the tensor's Fisher diagonal (``weighting`` "fisher", ``weights`` the fisher GGUF), or by
    its importance-matrix column energies ("imatrix", the imatrix GGUF), each read from disk (memory-mapped)."""
    import numpy as np
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import dequantize

    table = read_fisher(weights) if weighting == "fisher" else read_imatrix(weights)
    ref = tensor_arrays(f16)
    out: dict[str, tuple[str, float]] = {}
    for name, (t, data) in tensor_arrays(quantized).items():
        kind = t.type
        if kind in ("F32", "F16", "BF16") or name not in ref or name in skip:
            continue
        w = np.asarray(ref[name][1], dtype=np.float32)
        d: Any = dequantize(data, GGMLQuantizationType[kind]).astype(np.float32).reshape(w.shape)
        d -= w
        d *= d  # float32 squares, summed in float64 below: half the memory of float64 throughout
        imp = table.get(name)
        if imp is not None and imp.size == d.size:  # a Fisher diagonal: one weight per weight
            err = float((d.reshape(imp.shape) * imp).sum(dtype=np.float64))
        elif imp is not None and imp.shape[-1] == d.shape[-1]:  # the importance matrix: one per input column
            err = float((d.reshape(-1, d.shape[-1]) * imp.astype(np.float32)).sum(dtype=np.float64))
        else:  # looked up, not multiplied: one row's error per token
            err = float(d.sum(dtype=np.float64) / max(1, d.reshape(-1, d.shape[-1]).shape[0]))
        out[name] = (kind, err)
    return out


def collect(f16: Path, per_type: dict[str, Path], weighting: str, weights: Path, *, workers: int = 1,
            progress: bool = False, skip: dict[str, frozenset[str]] | None = None) -> list[TensorCost]:
    """Every quantizable tensor of ``f16`` with the error of each type it took in the per-type files (but the
    tensors ``skip`` names per kind: another file has them), the files
    measured ``workers`` at a time (threads: numpy lets go of the GIL on arrays this large, and a process pool
    would re-run the caller's main module, which a user's script calling ``edgeq.tune`` may not guard)."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    costs = {t.name: TensorCost(t.name, group_of(t.name), t.shape) for t in read_header(f16).tensors}
    kinds = sorted(per_type)
    found: dict[str, dict[str, tuple[str, float]]] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(kinds)))) as pool, \
            Progress("  errors", len(kinds), progress, unit="type") as bar:
        jobs = {pool.submit(tensor_errors, f16, per_type[k], weighting, weights, (skip or {}).get(k, frozenset())): k
                for k in kinds}
        for i, job in enumerate(as_completed(jobs)):
            found[jobs[job]] = job.result()
            bar.update_to(i + 1)
    for k in kinds:  # in a fixed order: a tensor that fell back records its real type from the first kind
        for name, (kind, err) in found[k].items():
            costs[name].errors.setdefault(kind, err)
    return [c for c in costs.values() if c.errors]


def tensor_type_rules(types: dict[str, str]) -> str:
    """A ``llama-quantize --tensor-type-file``: one anchored ``^name$=type`` rule per tensor (the names are
    regular expressions to llama-quantize, so the dots are escaped and each rule matches one tensor only)."""
    return "".join(f"^{n.replace('.', chr(92) + '.')}$={t.lower()}\n" for n, t in sorted(types.items()))


def recipe_errors(costs: list[TensorCost], types: dict[str, str]) -> dict[str, float]:
    """Summed error per group of a recipe ({tensor: type}); tensors not in it (or at F16) add none."""
    out = dict.fromkeys(GROUPS, 0.0)
    for c in costs:
        t = types.get(c.name)
        if t and t in c.errors:
            out[c.group] += c.errors[t]
    return out


@dataclass
class Calibration:
    """KLD per unit of error, per group, fitted on the probes; and how well it fits them."""

    coefficients: dict[str, float]
    probes: list[dict[str, Any]]  # {"type", "measured_kld", "predicted_kld"}

    def predict(self, errors: dict[str, float]) -> float:
        return self.coefficients.get("floor", 0.0) + sum(self.coefficients[g] * errors.get(g, 0.0) for g in GROUPS)

    def to_dict(self) -> dict[str, Any]:
        return {"coefficients": self.coefficients, "probes": self.probes}


def fit(probe_errors: dict[str, dict[str, float]], measured: dict[str, float]) -> Calibration:
    """Non-negative least squares in relative terms (each probe's equation divided by its measured KLD), so a
    probe at 1e-3 counts as much as one at 1e-1."""
    import numpy as np

    names = [p for p in probe_errors if measured.get(p, 0) > 0]
    if not names:
        raise UsageError("no probe gave a positive KLD, so the error cannot be calibrated.",
                         hint="Use a longer calibration text.")
    a = np.array([[probe_errors[p][g] / measured[p] for g in GROUPS] + [1.0 / measured[p]] for p in names])
    b = np.ones(len(names))
    coef = _nnls(a, b)
    cal = Calibration(dict(zip([*GROUPS, "floor"], map(float, coef))), [])
    cal.probes = [{"type": p, "measured_kld": measured[p], "predicted_kld": cal.predict(probe_errors[p])} for p in names]
    return cal


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Non-negative least squares over the few columns there are (6): every subset solved, the best kept."""
    import itertools

    import numpy as np

    best, best_res = np.zeros(a.shape[1]), float(np.sum(b**2))
    for k in range(1, a.shape[1] + 1):
        for cols in itertools.combinations(range(a.shape[1]), k):
            sub = a[:, cols]
            x, *_ = np.linalg.lstsq(sub, b, rcond=None)
            if (x < 0).any():
                continue
            full = np.zeros(a.shape[1])
            full[list(cols)] = x
            res = float(np.sum((a @ full - b) ** 2))
            if res < best_res:
                best, best_res = full, res
    return best


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
