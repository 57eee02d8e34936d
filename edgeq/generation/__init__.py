"""`edgeq run`: generate text with a GGUF, on this machine or with layers on RPC servers.

The engine runs in a child process (``edgeq.generation.worker``): llama.cpp aborts
the whole process when an RPC server vanishes, and a child that aborts can be
reported as one line naming the server.  The parent watches it: a server that
stops accepting connections, or a child silent for ``timeout_s``, ends the run.
"""
from __future__ import annotations

import json
import os
import selectors
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import compute, system
from ..errors import EdgeqError, RpcError, UsageError, from_dict
from ..files import missing_file
from ..llamacpp import Worker
from ..llamacpp.rpc import (
    RESTART_HINT,
    DevicePlacement,
    ServerInfo,
    parse_endpoints,
    probe_all,
    went_away,
)
from ..sources.adapter import check_lora_scale, require_adapter_for
from ..sources.gguf import require_generator

DEFAULT_N_PREDICT = 128
DEFAULT_CTX = 2048
DEFAULT_TIMEOUT_S = 600.0  # no output from the engine for this long ends the run
CHECK_EVERY_S = 5.0  # while the engine is quiet, check the RPC servers this often
EVENT_PREFIX = "\x1eedgeq "  # marks the worker's event lines (llama.cpp may print to stdout too)


@dataclass
class GenerateSpec:
    model: str
    prompt: str
    n_predict: int = DEFAULT_N_PREDICT
    temp: float = 0.0
    seed: int = 0
    n_ctx: int = DEFAULT_CTX
    threads: int = 0
    chat: bool = False
    rpc: list[str] = field(default_factory=list)
    no_local: bool = False
    tensor_split: list[float] | None = None
    device: str = "cpu"  # resolved by compute.choose
    lora: str | None = None  # an adapter GGUF applied at load time
    lora_scale: float = 1.0


@dataclass
class GenerateResult:
    model: str
    text: str
    finish_reason: str | None  # "length" (hit -n) or "stop" (end of text)
    prompt_tokens: int
    generated_tokens: int
    prompt_tps: float
    gen_tps: float
    load_s: float
    prompt_s: float
    gen_s: float
    n_layer: int
    offloaded_layers: int  # of n_layer + 1 (the output layer counts), placed on RPC servers or the GPU
    device: str = "cpu"  # where this machine's layers ran: cpu | metal (--device, resolved)
    rpc: list[str] = field(default_factory=list)
    servers: list[ServerInfo] = field(default_factory=list)
    placement: list[DevicePlacement] = field(default_factory=list)
    lora: str | None = None  # the adapter GGUF applied, if any
    lora_scale: float = 1.0


# The largest context edgeq asks llama.cpp for: past it the KV cache of even a small model is tens of GB.
MAX_CTX = 1 << 20


def run(model: str | Path, prompt: str, *, n_predict: int = DEFAULT_N_PREDICT, temp: float = 0.0, seed: int = 0,
        n_ctx: int = DEFAULT_CTX, threads: int | None = None, chat: bool = False,
        rpc: str | list[str] | None = None, no_local: bool = False, tensor_split: list[float] | None = None,
        on_text: Callable[[str], None] | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
        device: str = "auto", lora: str | Path | None = None, lora_scale: float = 1.0) -> GenerateResult:
    """Generate up to ``n_predict`` tokens after ``prompt`` (``temp`` 0 = greedy); ``on_text`` gets each piece.

    ``device``: auto, cpu or metal (``compute.choose``; auto is Metal on Apple Silicon), recorded in the result.

    With ``rpc`` (``"host:port,..."``), every server is probed first, then layers
    are split over this machine and the servers (``tensor_split`` weights, this
    machine first unless ``no_local``).  ``lora``: an adapter GGUF (``edgeq convert BASE --lora``) applied at
    ``lora_scale``; one that does not fit the model is refused before it loads.
    """
    path = Path(model).expanduser()
    if not path.is_file():
        raise UsageError(f"{path} {missing_file(path)}.", hint="Pass a .gguf file (see `edgeq convert`).")
    if n_predict < 1 or n_ctx < 16:
        raise UsageError("-n must be at least 1 and --ctx at least 16.")
    if not prompt.strip():
        raise UsageError("the prompt is empty.", hint='Pass the text to continue, e.g. edgeq run MODEL.gguf "Once upon a time".')
    if n_ctx > MAX_CTX:
        raise UsageError(f"--ctx {n_ctx:,} is beyond any model's context; its KV cache alone would not fit in memory.",
                         hint=f"Use at most the model's trained context (`edgeq inspect` shows it); the limit here is {MAX_CTX:,}.")
    on = compute.choose(device)
    check_lora_scale(lora, lora_scale)
    endpoints = parse_endpoints(rpc)
    if (no_local or tensor_split) and not endpoints:
        raise UsageError("--no-local and --tensor-split need --rpc.")
    require_generator(path, "edgeq run generates text")  # reads the file: after every check of the options
    adapter = str(require_adapter_for(lora, [path])) if lora else None
    servers = probe_all(endpoints)
    spec = GenerateSpec(str(path.resolve()), prompt, n_predict, temp, seed, n_ctx, threads or system.default_threads(),
                        chat, endpoints, no_local, tensor_split, on.device, adapter, lora_scale)
    out = _run_worker(spec, on_text or (lambda s: None), timeout_s)
    return GenerateResult(model=str(path), rpc=endpoints, servers=servers, device=on.device, lora=adapter,
                          lora_scale=lora_scale,
                          placement=[DevicePlacement(**p) for p in out["placement"]],
                          prompt_tps=_rate(out["prompt_tokens"], out["prompt_s"]),
                          gen_tps=_rate(out["decoded_tokens"], out["gen_s"]), **_fields(out))


# The library's name for this function before the verb's own; kept so scripts written against it still run.
generate = run


def _rate(n: int, s: float) -> float:
    return round(n / s, 2) if s > 0 else 0.0


def _fields(out: dict[str, Any]) -> dict[str, Any]:
    keys = ("text", "finish_reason", "prompt_tokens", "generated_tokens", "load_s", "prompt_s", "gen_s", "n_layer",
            "offloaded_layers")
    return {k: round(out[k], 3) if isinstance(out[k], float) else out[k] for k in keys}


def _run_worker(spec: GenerateSpec, on_text: Callable[[str], None], timeout_s: float) -> dict[str, Any]:
    """Start the worker, relay its text, watch it and the servers; return its result or raise one clear error."""
    w = Worker("edgeq.generation.worker")
    phase, result, error = "loading the model", None, None
    try:
        proc = w.proc
        assert proc.stdin and proc.stdout
        proc.stdin.write(json.dumps(asdict(spec)).encode())
        proc.stdin.close()
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        buf, last = b"", time.monotonic()
        while True:
            if not sel.select(timeout=CHECK_EVERY_S):
                _check_alive(spec, phase, last, timeout_s)
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            last = time.monotonic()
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                if not line.startswith(EVENT_PREFIX):
                    continue
                ev = json.loads(line[len(EVENT_PREFIX):])
                if ev["event"] == "text":
                    on_text(ev["text"])
                elif ev["event"] == "loaded":
                    phase = "generation"
                elif ev["event"] == "result":
                    result = ev["result"]
                elif ev["event"] == "error":
                    error = ev
        if error:
            raise from_dict(error)
        if result is None or w.wait() != 0:
            raise _diagnose(spec, phase, w)
        return result
    finally:
        w.stop()


def _check_alive(spec: GenerateSpec, phase: str, last: float, timeout_s: float) -> None:
    gone = went_away(spec.rpc, phase)
    if gone:
        raise gone
    quiet = time.monotonic() - last
    if quiet > timeout_s:
        who = f" (RPC servers: {', '.join(spec.rpc)})" if spec.rpc else ""
        raise EdgeqError(f"no progress for {quiet:.0f} s during {phase}{who}; stopped.",
                         hint="Raise --timeout for a very large model or a slow network.")


def _diagnose(spec: GenerateSpec, phase: str, w: Worker) -> EdgeqError:
    """The worker died: name the server that is gone if one is, else the crash or llama.cpp's last line."""
    if spec.rpc:
        gone = went_away(spec.rpc, phase)
        if gone:
            return gone
        rc, tail = w.wait(), w.tail()
        said = next((ln.strip() for ln in reversed(tail) if "error" in ln.lower() or "abort" in ln.lower()), "")
        if "RPC" in said or rc == -6:
            return RpcError(spec.rpc[0], f"an RPC server failed during {phase} ({', '.join(spec.rpc)}): {said}",
                            hint=RESTART_HINT)
    return w.failure(f"during {phase} of {Path(spec.model).name}")
