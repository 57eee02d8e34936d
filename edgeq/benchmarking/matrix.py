"""`edgeq bench`: build the run matrix, run each cell in its own process, keep every result."""
from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from .. import compute, system
from .._version import __version__
from ..conversion.models import lora_for, plan_models
from ..errors import EdgeqError, NativeCrash, UsageError
from ..files import ensure_folder, write_json_atomic
from ..llamacpp import DOCTOR_HINT, find_toolchain, llama_cpp_version, measure_bandwidth
from ..llamacpp.rpc import parse_endpoints, probe_all
from ..output import Progress, note
from ..planning.calibrate import terms_of_file
from ..planning.devices import local_repack_types
from ..quants import parse_quants
from ..sources import file_fingerprint
from ..sources.adapter import check_lora_scale
from . import fit
from .eta import ETA, human_seconds
from .llama_bench import cross_check
from .noise import busy_reason, load_now
from .prompts import load_prompts
from .results import SCHEMA, BenchResults, RunResult, RunSpec, Stat, write_csv
from .runs import WorkerPool, skipped_rows
from .verdict import roofline, verdicts

GGUF_BACKEND = "llama.cpp"
HF_VARIANTS = ("fp32", "bf16", "bnb-int8", "bnb-nf4")
# What `edgeq bench` measures when not told otherwise (the CLI shows these).
DEFAULT_QUANTS = ("F32", "F16", "Q8_0", "Q4_K_M")
DEFAULT_N_PROMPT, DEFAULT_N_GEN, DEFAULT_BATCHES, DEFAULT_REPS = 512, 128, (1, 16), 3


def resolve_device(device: str) -> str:
    """``--device``: auto, cpu or metal as every verb takes it (``compute.choose``), or cuda for the transformers runs."""
    if device == "cuda":
        return device
    try:
        return compute.choose(device).device
    except UsageError as e:
        if "unknown --device" in e.message:
            raise UsageError(f"unknown --device {device!r}.", hint="Use auto, cpu, metal or cuda.") from None
        raise


def build_specs(ggufs: list[tuple[str, Path, str]], checkpoints: list[tuple[str, Path]], *, hf_variants: list[str],
                device: str, threads: int, batches: list[int], n_prompt: int, n_gen: int, reps: int,
                prompts: dict[str, str], rpc: list[str] | None = None, no_local: bool = False,
                tensor_split: list[float] | None = None) -> list[RunSpec]:
    common: dict[str, Any] = dict(threads=threads, n_prompt=n_prompt, n_gen=n_gen, reps=reps, prompts=prompts)
    # Our llama.cpp build has CPU (and Metal on Apple) backends only; CUDA is for the transformers runs.
    gguf_device = device if device in ("cpu", "metal") else "cpu"
    specs = [RunSpec(model=name, path=str(Path(path).resolve()), backend=GGUF_BACKEND, variant=variant,
                     device=gguf_device, batch=b,
                     rpc=list(rpc or []), no_local=no_local, tensor_split=tensor_split, **common)
             for name, path, variant in ggufs for b in batches]
    hf_devices = ["cpu"] + (["cuda"] if _cuda_available() and checkpoints else [])
    specs += [RunSpec(model=name, path=str(Path(path).resolve()), backend="transformers", variant=v, device=d, batch=b, **common)
              for name, path in checkpoints for d in hf_devices for v in hf_variants for b in batches]
    return specs


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def failure(res: BenchResults) -> EdgeqError | None:
    """The error to exit with when no run was measured and at least one failed (None otherwise)."""
    runs = res.runs
    if runs and all(r.status == "skipped" for r in runs):  # nothing measured is no result, whatever the reason
        return EdgeqError(f"no run was measured: all {len(runs)} were skipped; the first: {runs[0].reason}",
                          hint="Bench smaller files (fewer --quants, --hf ''), or run it on a machine with more memory.")
    if any(r.status == "ok" for r in runs) or not any(r.status == "failed" for r in runs):
        return None
    failed = [r for r in runs if r.status == "failed"]
    crashed = [r for r in failed if r.crash_signal]
    if crashed:
        signals = sorted({r.crash_signal for r in crashed if r.crash_signal})
        files = sorted({Path(r.path).name for r in crashed})
        return NativeCrash("/".join(signals), f"in {len(crashed)} of {len(runs)} benchmark runs ({', '.join(files)})",
                           "no run was measured", hint=DOCTOR_HINT)
    return EdgeqError(f"every benchmark run failed ({len(failed)} of {len(runs)}); the first: {failed[0].reason}")


def environment(threads: int) -> dict[str, object]:
    import importlib.metadata as md

    def v(d: str) -> str:
        try:
            return md.version(d)
        except md.PackageNotFoundError:
            return "not installed"

    s = system.system_info()
    return {"cpu": s.cpu, "physical_cores": s.physical_cores, "logical_cores": s.logical_cores,
            "cpu_features": s.cpu_features, "ram_total_bytes": s.ram_total_bytes, "os": s.os, "machine": s.machine,
            "metal": s.metal, "threads": threads, "python": platform.python_version(),
            "versions": {"edgeq": __version__, "llama.cpp": llama_cpp_version(find_toolchain()),
                         "llama-cpp-python": v("llama_cpp_python"), "torch": v("torch"),
                         "transformers": v("transformers"), "bitsandbytes": v("bitsandbytes")},
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def bench(models: list[str], *, quants: list[str] | None = None, hf_variants: list[str] | None = None,
          device: str = "auto", threads: int | None = None, n_prompt: int = DEFAULT_N_PROMPT,
          n_gen: int = DEFAULT_N_GEN, batches: list[int] | tuple[int, ...] = DEFAULT_BATCHES, reps: int = DEFAULT_REPS, prompt_file: str | None = None,
          check_llama_bench: bool = False, output: str | Path | None = None, progress: bool = True,
          rpc: str | list[str] | None = None, no_local: bool = False,
          tensor_split: list[float] | None = None, revision: str | None = None,
          token: str | None = None, csv: str | Path | None = None, lora: str | Path | None = None,
          lora_scale: float = 1.0) -> BenchResults:
    """Benchmark GGUF quants (llama.cpp) against full precision (transformers) here; no ``models``: the embedded one.

    Each model × backend × batch runs in its own process, which loads its model once
    and measures it in every repetition round (rounds over the whole matrix), after a
    warm-up each time; a process is restarted only where memory is short (``WorkerPool``).  When ``output`` is
    given, results are saved after every run, so Ctrl-C keeps what was measured.  With ``rpc``
    (``"host:port,..."``) the GGUF runs put their layers on those llama.cpp RPC servers.  With ``csv`` the runs
    are also written there, one row each in llama-bench's field names.  With ``lora`` every GGUF run applies
    that adapter GGUF at ``lora_scale`` (one that does not fit a model is refused before any run).
    """

    if min(n_prompt, n_gen, reps, *batches) < 1:
        raise UsageError("-p, -n, -r and --batch must all be at least 1.")
    qnames = [q.name for q in parse_quants(quants)] if quants else None
    dev = resolve_device(device)
    check_lora_scale(lora, lora_scale)
    endpoints = parse_endpoints(rpc)
    if (no_local or tensor_split) and not endpoints:
        raise UsageError("--no-local and --tensor-split need --rpc.")
    probe_all(endpoints)  # a bad server is one clear error before anything runs or is written
    if output:
        ensure_folder(Path(output).parent)  # a bad -o fails now, not after the first run
    threads = threads or system.default_threads()
    prompts = load_prompts(prompt_file)
    ggufs, checkpoints = plan_models(models, qnames, progress, revision=revision, token=token,
                                      doing="edgeq bench measures text generation")
    hf = list(HF_VARIANTS if hf_variants is None else hf_variants)  # [] (`--hf ""`): none, as the help says
    specs = build_specs(ggufs, checkpoints, hf_variants=hf, device=dev, threads=threads,
                        batches=list(batches), n_prompt=n_prompt, n_gen=n_gen, reps=reps, prompts=prompts,
                        rpc=endpoints, no_local=no_local, tensor_split=tensor_split)
    if lora:
        adapter = str(lora_for(lora, ggufs, checkpoints if hf else []))
        specs = [replace(s, lora=adapter, lora_scale=lora_scale) if s.backend == GGUF_BACKEND else s for s in specs]
    res = BenchResults(SCHEMA, environment(threads), {"n_prompt": n_prompt, "n_gen": n_gen, "batches": list(batches),
                                                      "reps": reps, "device": dev, "prompts": list(prompts),
                                                      "rpc": endpoints})
    terms = [_calibration_terms(s) for s in specs]
    too_big = fit.too_big(specs, system.memory_bytes()[1])  # asked before any run starts, as the rows will say
    runs_any = len(too_big) < len(specs)
    t_start = time.perf_counter()
    # The ceiling is the best of readings taken before the first round and after each one: this VM's
    # speed drifts by a fifth within minutes, and one reading taken in a slow moment made F32 beat it.
    t_reading = time.perf_counter()
    readings = [_bandwidth(threads) if runs_any else None]
    res.roofline = roofline([], readings)
    eta = ETA(specs, reps, readings[0]["read_gbps"] if readings[0] else None,
              per_round_s=time.perf_counter() - t_reading)  # each round ends with a reading too
    res.timing = {"estimated_s": round(eta.total(), 1)}
    if progress:
        note(f"bench: {len(specs)} runs × {reps} rounds; about {human_seconds(eta.total())} (estimate)")
    try:
        # Repetitions go in rounds over the whole matrix, so slow drift of the
        # machine's speed hits every variant alike instead of whichever ran last.
        measured: dict[int, list[list[RunResult]]] = {}
        with WorkerPool(specs) as pool, Progress("bench", len(specs) * reps, progress, unit="run", own_eta=True) as bar:
            left = eta.total()
            for rnd in range(reps):
                for i, spec in enumerate(specs):
                    guess = " (estimate)" if eta.guessed else ""
                    bar.say(f"{spec.variant} {spec.backend} batch {spec.batch} · about {human_seconds(left)} left{guess}")
                    loads, t0 = pool.loads[i], time.perf_counter()
                    rows = skipped_rows(spec, too_big[i]) if i in too_big else pool.measure(i)
                    eta.record(i, time.perf_counter() - t0, rows, loaded=pool.loads[i] > loads)
                    measured.setdefault(i, []).append([replace(r, **terms[i]) for r in rows])
                    res.runs = [r for rows in measured.values() for r in merge_rounds(rows)]
                    _save(res, output)
                    bar.update_to(rnd * len(specs) + i + 1)
                    left = eta.left(rnd, i, live=set(pool.live))
                res.loads.append(load_now())
                readings.append(_bandwidth(threads) if runs_any else None)
            res.timing["loads"] = sum(pool.loads)
            res.timing["runs"] = eta.record_rows()
        res.timing["matrix_s"] = round(time.perf_counter() - t_start, 1)
        if check_llama_bench:
            res.llama_bench = cross_check(res.runs, threads=threads, n_prompt=n_prompt, n_gen=n_gen, reps=reps)
    except KeyboardInterrupt:
        res.interrupted = True
        _finish(res, readings)
        _save(res, output)
        raise
    _finish(res, readings)
    _save(res, output)
    if csv:
        write_csv(res, Path(csv))
    return res


def _bandwidth(threads: int) -> dict[str, Any] | None:
    """One edgeq-bandwidth reading; None (no ceiling from it) if the tool fails, say for memory the idle
    workers hold: a matrix nearly done must not die of its ruler."""
    try:
        return measure_bandwidth(threads=threads)
    except EdgeqError:
        return None


def _calibration_terms(spec: RunSpec) -> dict[str, Any]:
    """A GGUF run's fingerprint and calibration terms (none for RPC runs: their layers are elsewhere)."""
    if spec.backend != GGUF_BACKEND:
        return {}
    path = Path(spec.path)
    try:
        out: dict[str, Any] = {"fingerprint": file_fingerprint(path)}
        if not spec.rpc:  # repacking is the CPU backend's; Metal keeps the file's layout
            repack = local_repack_types() if spec.device == "cpu" else []
            out["calibration"] = terms_of_file(path, batch=spec.batch, n_prompt=spec.n_prompt, n_gen=spec.n_gen,
                                               repack_types=repack)
    except (OSError, EdgeqError):  # unreadable: its worker will say why, as a failed row
        return {}
    return out


def merge_rounds(rounds: list[list[RunResult]]) -> list[RunResult]:
    """One row per prompt from the rows of each round: samples pooled, peak memory the highest."""
    merged = []
    for rows in zip(*rounds):
        ok = [r for r in rows if r.status == "ok"]
        if not ok:
            merged.append(rows[-1])
            continue
        first = replace(ok[0], reps=len(ok))
        first.pp_tps = Stat.of([x for r in ok for x in r.pp_tps.samples])
        first.tg_tps = Stat.of([x for r in ok for x in r.tg_tps.samples])
        first.ms_per_token = round(1000 * first.batch / first.tg_tps.median, 3)
        first.load_s = round(statistics.median(r.load_s or 0 for r in ok), 3)
        first.peak_rss_bytes = max(r.peak_rss_bytes or 0 for r in ok)
        gpu = [r.peak_gpu_bytes for r in ok if r.peak_gpu_bytes]
        first.peak_gpu_bytes = max(gpu) if gpu else None
        first.loads = len({r.pid for r in ok})
        if len(ok) < len(rows):
            first.reason = f"{len(rows) - len(ok)} of {len(rows)} rounds failed: {rows[-1].reason}"
        merged.append(first)
    return merged


def _finish(res: BenchResults, readings: list[dict[str, Any] | None]) -> None:
    res.verdicts = verdicts(res.runs)
    res.roofline = roofline(res.runs, readings, threads=res.environment.get("threads"))
    threads = int(res.environment.get("threads") or 1)
    res.busy = busy_reason(res.runs, res.loads, cores=int(res.environment.get("physical_cores") or threads),
                           threads=threads)


def _save(res: BenchResults, output: str | Path | None) -> None:
    if output:
        write_json_atomic(Path(output), asdict(res))
