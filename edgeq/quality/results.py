"""Evaluation result types: plain dataclasses, one JSON schema that ``report`` reads."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .._version import __version__
from ..files import write_json_atomic
from ..llamacpp import find_toolchain, llama_cpp_version

SCHEMA = "edgeq-eval/1"


@dataclass
class ModelRef:
    """One model variant to score: a GGUF file, or an HF checkpoint run by transformers (fp32, bf16, bnb-*)."""

    name: str  # the model, e.g. SmolLM2-135M-Instruct
    variant: str  # F16, Q8_0, Q4_K_M-imat... or fp32, bf16, bnb-int8, bnb-nf4 for transformers
    backend: str  # llama.cpp | transformers
    path: str
    size_bytes: int | None = None
    bits_per_weight: float | None = None
    lora: str | None = None  # a LoRA adapter GGUF applied to this GGUF (eval --lora)
    lora_scale: float | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        """What makes two refs the same scoring: one file or checkpoint, in one backend, as one variant."""
        return (self.backend, self.variant, self.path)

    @property
    def label(self) -> str:
        return f"{self.variant} ({'HF' if self.backend == 'transformers' else 'GGUF'}{' + LoRA' if self.lora else ''})"


@dataclass
class Row:
    """One model's scores; the fields of the other task stay None."""

    model: ModelRef
    seconds: float
    ppl: float | None = None
    ppl_stderr: float | None = None
    tokens_scored: int | None = None
    delta_ppl_pct: float | None = None  # vs the reference
    kld_mean: float | None = None
    kld_stderr: float | None = None
    kld_median: float | None = None
    kld_p99: float | None = None
    kld_max: float | None = None
    top1_pct: float | None = None
    acc: float | None = None  # summed log-likelihood
    acc_norm: float | None = None  # log-likelihood per byte of the ending
    acc_stderr: float | None = None
    items: int | None = None
    agree_with_reference_pct: float | None = None  # same choice as the reference model


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class EvalResults:
    task: str  # ppl | choice
    data: dict[str, Any]  # source, tokens, windows...: what every row was scored on
    reference: str | None
    rows: list[Row] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    created: str = ""
    edgeq_version: str = ""
    llama_cpp: str = ""
    threads: int = 0
    device: str = "cpu"  # where the GGUF files were scored (--device, resolved): cpu | metal
    schema: str = SCHEMA

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalResults:
        rows = [Row(**{**r, "model": ModelRef(**r["model"])}) for r in d.get("rows", [])]
        checks = [Check(**c) for c in d.get("checks", [])]
        return cls(**{**d, "rows": rows, "checks": checks})


def stamp(res: EvalResults, threads: int, device: str = "cpu") -> EvalResults:
    """Record when, with what, on how many threads and on which device the results were measured."""
    import time

    res.created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    res.edgeq_version, res.threads, res.device = __version__, threads, device
    res.llama_cpp = llama_cpp_version(find_toolchain())
    return res


def save(res: EvalResults, path: str) -> None:
    """Write the results JSON whole (temporary name, then rename)."""
    from dataclasses import asdict
    from pathlib import Path

    write_json_atomic(Path(path), asdict(res))
