"""Benchmark result types: plain dataclasses, one JSON schema (``report`` reads only this)."""
from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import atomic_output

SCHEMA = "edgeq-bench/1"


@dataclass
class Stat:
    median: float
    min: float
    max: float
    samples: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, xs: list[float]) -> Stat:
        return cls(round(statistics.median(xs), 3), round(min(xs), 3), round(max(xs), 3), [round(x, 3) for x in xs])


@dataclass
class RunSpec:
    """One worker process: one model variant on one backend at one batch size."""

    model: str  # display name
    path: str  # GGUF file or HF checkpoint folder
    backend: str  # "llama.cpp" | "transformers"
    variant: str  # F32/F16/Q8_0/... or fp32/bf16/bnb-int8/bnb-nf4
    device: str  # cpu | metal | cuda
    threads: int
    batch: int
    n_prompt: int
    n_gen: int
    reps: int
    prompts: dict[str, str]
    rpc: list[str] = field(default_factory=list)  # llama.cpp RPC servers holding layers (host:port)
    no_local: bool = False  # every layer on the servers
    tensor_split: list[float] | None = None  # layer shares: [this machine,] server 1..n
    lora: str | None = None  # a LoRA adapter GGUF applied to a llama.cpp run
    lora_scale: float = 1.0


def weight_file_bytes(spec: RunSpec) -> int:
    """Bytes of a spec's weights on disk: its GGUF, or its checkpoint's weight files (0 if neither is there)."""
    p = Path(spec.path)
    if p.is_file():
        return p.stat().st_size
    if not p.is_dir():
        return 0
    return sum(f.stat().st_size for f in p.glob("*") if f.suffix in (".safetensors", ".bin"))


@dataclass
class RunResult:
    model: str
    path: str
    backend: str
    variant: str
    device: str
    threads: int
    batch: int
    prompt: str  # prompt name: en, hi, or the --prompt-file stem
    n_prompt: int
    n_gen: int
    reps: int
    status: str  # ok | skipped | failed
    reason: str | None = None
    crash_signal: str | None = None  # SIGSEGV, SIGILL, ...: llama.cpp (or torch) crashed in the worker
    load_s: float | None = None
    pp_tps: Stat | None = None  # prompt tokens per second, all sequences together
    tg_tps: Stat | None = None  # generated tokens per second, all sequences together
    ms_per_token: float | None = None  # per sequence, median
    peak_rss_bytes: int | None = None
    peak_gpu_bytes: int | None = None
    file_size_bytes: int | None = None
    weight_bytes: int | None = None  # bytes of weights read per generated token
    bits_per_weight: float | None = None
    n_params: int | None = None
    sample: str | None = None  # start of the first sequence's continuation
    pid: int | None = None  # the worker process that measured it (one per model × backend × batch)
    loads: int | None = None  # worker processes (model loads) its rounds took: 1 when one worker did them all
    rpc: list[str] | None = None  # RPC servers that held layers
    placement: list[dict[str, Any]] | None = None  # per device: layers, model/KV/compute MiB (rpc.DevicePlacement)
    fingerprint: str | None = None  # the GGUF's (name, size, mtime) hash: which file ``path`` was
    # What `plan --calibrate` needs of this run (plan.calibrate.terms_of_file), so it never needs the file.
    calibration: dict[str, Any] | None = None
    lora: str | None = None  # the LoRA adapter GGUF applied, if any
    lora_scale: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> RunResult:
        stats = {k: Stat(**d[k]) if d.get(k) else None for k in ("pp_tps", "tg_tps")}  # type: ignore[arg-type]
        return cls(**{**d, **stats})  # type: ignore[arg-type]


@dataclass
class Verdict:
    variant: str
    batch: int
    prompt: str
    vs: dict[str, dict[str, float]] = field(default_factory=dict)  # baseline -> {pp, tg, memory}
    reference: str | None = None  # the full-precision baseline the verdict is judged against
    holds: bool | None = None
    sentence: str = ""


@dataclass
class LlamaBenchCheck:
    variant: str
    ours_pp_tps: float
    ours_tg_tps: float
    llama_bench_pp_tps: float
    llama_bench_tg_tps: float
    pp_diff: float
    tg_diff: float
    agrees: bool


@dataclass
class BenchResults:
    schema: str
    environment: dict[str, Any]
    settings: dict[str, Any]
    runs: list[RunResult] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    roofline: dict[str, Any] = field(default_factory=dict)
    llama_bench: list[LlamaBenchCheck] = field(default_factory=list)
    interrupted: bool = False
    busy: str | None = None  # why the machine looked busy while it measured (bench.noise), or None
    loads: list[float | None] = field(default_factory=list)  # 1-minute load average after each round
    # Seconds: estimated_s (before it ran), matrix_s (bandwidth readings and every run); loads: workers started.
    timing: dict[str, Any] = field(default_factory=dict)
    images: list[dict[str, Any]] = field(default_factory=list)  # bench --image: benchmarking.image.ImageRun each


CSV_FIELDS = ["model_filename", "model_type", "backend", "device", "n_threads", "n_seq", "prompt", "test",
              "n_prompt", "n_gen", "avg_ts", "min_ts", "max_ts", "samples_ts", "load_s", "ms_per_token",
              "peak_rss_bytes", "peak_gpu_bytes", "model_size", "model_n_params", "bits_per_weight", "status", "reason"]


def csv_rows(runs: list[RunResult]) -> list[dict[str, object]]:
    """One row per run and test (pp / tg), with llama-bench's field names where it has one."""
    rows = []
    for r in runs:
        for test, stat in (("pp", r.pp_tps), ("tg", r.tg_tps)):
            rows.append({
                "model_filename": r.path, "model_type": r.variant, "backend": r.backend, "device": r.device,
                "n_threads": r.threads, "n_seq": r.batch, "prompt": r.prompt, "test": test,
                "n_prompt": r.n_prompt, "n_gen": r.n_gen if test == "tg" else 0,
                "avg_ts": stat.median if stat else "", "min_ts": stat.min if stat else "",
                "max_ts": stat.max if stat else "", "samples_ts": ";".join(map(str, stat.samples)) if stat else "",
                "load_s": r.load_s, "ms_per_token": r.ms_per_token if test == "tg" else "",
                "peak_rss_bytes": r.peak_rss_bytes, "peak_gpu_bytes": r.peak_gpu_bytes,
                "model_size": r.file_size_bytes or r.weight_bytes, "model_n_params": r.n_params,
                "bits_per_weight": r.bits_per_weight, "status": r.status, "reason": r.reason or ""})
    return rows


def write_csv(res: BenchResults, path: Path) -> None:
    """The runs as CSV, one row each, in llama-bench's field names (written whole: temporary name, then rename)."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(csv_rows(res.runs))
