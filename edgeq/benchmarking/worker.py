"""One benchmark spec in a process of its own (``python -m edgeq.benchmarking.worker``; protocol in ``main``).

A process per model × backend × batch keeps peak RSS honest: nothing another
model allocated, and no torch in a llama.cpp run.  The same process may measure
its spec in every round (``runs.WorkerPool``): its peak is still its one model's.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from dataclasses import asdict
from typing import Any

from ..backends import Runner
from ..backends.llamacpp import LOAD_LOG, BatchRunner
from ..backends.llamacpp_rpc import add_rpc_servers, rpc_tensor_split
from ..backends.transformers import HFRunner
from ..compute import for_resolved
from ..llamacpp import own_peak_rss
from ..llamacpp.rpc import layer_split, parse_placement
from ..sources.gguf import read
from .prompts import fit, sequences
from .results import RunResult, RunSpec, Stat


def peak_rss_bytes() -> int:
    """This process's own peak RSS.

    On Linux ``ru_maxrss`` survives fork + exec, so a worker would report its
    parent's peak when that is larger; the kernel's VmHWM is the process's own.
    """
    if (peak := own_peak_rss()) is not None:
        return peak
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kb if sys.platform == "darwin" else kb * 1024)  # macOS reports bytes, Linux KiB


def _runner(spec: RunSpec) -> tuple[Runner, dict[str, Any]]:
    if spec.backend == "llama.cpp":

        info = read(spec.path)
        # Rounded up to a multiple of 256: some odd sizes (133, 264 cells) made F32 prompt
        # processing a third slower here than llama-bench, which sizes its context exactly.
        need = spec.batch * (spec.n_prompt + spec.n_gen + 1)
        n_ctx = -(-need // 256) * 256
        on = for_resolved(spec.device)
        ngl, split, devices = on.n_gpu_layers, None, {}
        if spec.rpc:

            devices = add_rpc_servers(spec.rpc)
            ngl, weights = layer_split(info.block_count or 0, len(spec.rpc), spec.tensor_split, local=not spec.no_local)
            split = rpc_tensor_split(devices, spec.rpc, weights)
            LOAD_LOG.clear()
        r = BatchRunner(spec.path, threads=spec.threads, n_ctx=n_ctx, n_batch=min(2048, max(512, spec.batch)),
                        n_seq=spec.batch, n_gpu_layers=ngl, tensor_split=split, op_offload=on.op_offload)
        r.use_lora(spec.lora, spec.lora_scale)
        facts: dict[str, Any] = {"file_size_bytes": info.file_size_bytes, "bits_per_weight": info.bits_per_weight,
                                 "n_params": info.parameters, "weight_bytes": info.bytes_per_token}
        if spec.rpc:
            facts["placement"] = [asdict(p) for p in parse_placement(LOAD_LOG, devices)]
        return r, facts

    hf = HFRunner(spec.path, spec.variant, threads=spec.threads, device=spec.device)
    return hf, {"n_params": hf.n_params, "weight_bytes": hf.bytes_per_token,
                "bits_per_weight": round(8 * hf.weight_bytes / hf.n_params, 3)}


def _base(spec: RunSpec) -> dict[str, Any]:
    """The fields a result copies from its spec."""
    base = {k: getattr(spec, k) for k in ("model", "path", "backend", "variant", "device", "threads", "batch",
                                          "n_prompt", "n_gen", "reps")}
    return {**base, "rpc": spec.rpc or None, "lora": spec.lora, "lora_scale": spec.lora_scale if spec.lora else None}


def load(spec: RunSpec) -> tuple[Runner, dict[str, Any], float]:
    """The runner for ``spec``, the facts its rows carry, and the seconds loading took."""
    t0 = time.perf_counter()
    runner, facts = _runner(spec)
    return runner, facts, time.perf_counter() - t0


def measure(spec: RunSpec, runner: Runner, facts: dict[str, Any], load_s: float) -> list[RunResult]:
    """Per prompt: a warm-up, then ``reps`` timed repetitions (with a runner already loaded)."""
    base = _base(spec)
    rows = []
    for name, text in spec.prompts.items():
        toks = runner.tokenize(text)
        keep = 1 if getattr(runner, "adds_bos", False) else 0
        seqs = sequences(fit(toks, spec.n_prompt, keep_first=keep), spec.batch, keep_first=keep)
        # Warm-up every time: another worker may have run since, and its pages and caches displaced ours.
        runner.run(seqs, min(4, spec.n_gen))
        pp: list[float] = []
        tg: list[float] = []
        out: list[list[int]] = []
        for _ in range(spec.reps):
            pp_s, tg_s, out = runner.run(seqs, spec.n_gen)
            pp.append(spec.batch * spec.n_prompt / pp_s)
            tg.append(spec.batch * spec.n_gen / tg_s)
        tg_stat = Stat.of(tg)
        rows.append(RunResult(**base, prompt=name, status="ok", load_s=round(load_s, 3), pp_tps=Stat.of(pp),
                              tg_tps=tg_stat, ms_per_token=round(1000 * spec.batch / tg_stat.median, 3),
                              sample=runner.decode(out[0][:32]), **facts))
    # The process's own peak over its whole life: one model, however many rounds it measured.
    peak = peak_rss_bytes()
    gpu = runner.peak_gpu_bytes()
    for r in rows:
        r.peak_rss_bytes, r.peak_gpu_bytes, r.pid = peak, gpu, os.getpid()
    return rows


def _failed(spec: RunSpec, e: Exception) -> list[RunResult]:
    reason = f"{type(e).__name__}: {e}".splitlines()[0]
    return [RunResult(**_base(spec), prompt=p, status="failed", reason=reason) for p in spec.prompts]


_REPLIES = sys.stdout  # replaced in main by a private copy of fd 1


def _send(rows: list[RunResult]) -> None:
    _REPLIES.write(json.dumps([asdict(r) for r in rows]) + "\n")
    _REPLIES.flush()


def main() -> None:
    """Protocol: the spec (one JSON line), then one ``{"op": "measure"}`` line per round, each answered
    with one JSON line of rows; end of input (or ``{"op": "close"}``) ends the worker.

    The model is loaded once, so a worker kept alive between rounds pays its load once; a
    failure is reported as failed rows, never as a crash of the matrix, and ends the worker.
    """
    global _REPLIES
    # Replies go on a private copy of stdout; fd 1 itself becomes stderr, so a library's stray print (Python
    # or C) can never put a line where the parent reads its rows.
    _REPLIES = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    spec = RunSpec(**json.loads(sys.stdin.readline()))
    try:
        runner, facts, load_s = load(spec)
    except Exception as e:  # noqa: BLE001 - reported as a failed run
        _send(_failed(spec, e))
        os._exit(0)
    for line in sys.stdin:
        if json.loads(line).get("op") != "measure":
            break
        try:
            rows = measure(spec, runner, facts, load_s)
        except Exception as e:  # noqa: BLE001 - reported as a failed run
            _send(_failed(spec, e))
            break
        _send(rows)
    os._exit(0)  # skip slow interpreter teardown of torch / llama.cpp


if __name__ == "__main__":
    main()
