"""Where llama.cpp computes: the one decision from ``--device auto|cpu|metal`` and the platform to layers.

Every verb that runs a model (run, eval, tune's scoring, ship's stages, doctor's probe, bench) resolves its
``--device`` here, records the resolved name in its results, and hands the engine and llama.cpp's tools the
same layers: so a CPU figure is never checked against a GPU one.  The platform is an argument (default: this
machine's), so the decision for an Apple Silicon Mac is tested on Linux.
"""
from __future__ import annotations

import platform as _platform
from dataclasses import dataclass

from .errors import UsageError

CHOICES = ("auto", "cpu", "metal")
# llama.cpp's "every layer" (its tools' own -ngl 999 convention; a model has far fewer).
ALL_LAYERS = 999


@dataclass(frozen=True)
class Compute:
    """A resolved device: its name, the layers llama.cpp offloads, and why it was chosen."""

    device: str  # "cpu" | "metal"
    n_gpu_layers: int  # 0 on the CPU, ALL_LAYERS on Metal
    reason: str

    @property
    def op_offload(self) -> bool:
        """On the CPU nothing may move to a GPU: llama.cpp otherwise sends large batches of CPU-resident
        weights to Metal ("op offload"), and a CPU figure would be part GPU."""
        return self.device != "cpu"

    def tool_args(self, tool: str) -> list[str]:
        """The same device for one of llama.cpp's tools (llama-bench spells the op-offload switch its own way)."""
        args = ["-ngl", str(self.n_gpu_layers)]
        if not self.op_offload:
            args += ["-nopo", "1"] if tool == "llama-bench" else ["--no-op-offload"]
        return args


def metal_capable(system: str, machine: str) -> bool:
    """Apple Silicon (macOS on arm64) runs llama.cpp on the GPU through Metal; an Intel Mac's build has no Metal
    here (edgeq's CMake turns Metal on for Apple targets, and ggml-metal needs Apple GPUs' unified memory)."""
    return system == "Darwin" and machine in ("arm64", "aarch64")


def choose(requested: str = "auto", *, system: str | None = None, machine: str | None = None) -> Compute:
    """``--device`` on a platform (default this one) → the device, its layers and the reason.

    ``auto`` is Metal on Apple Silicon and the CPU elsewhere; ``metal`` elsewhere is a usage error naming the
    platform; anything else names the choices."""
    system = _platform.system() if system is None else system
    machine = _platform.machine() if machine is None else machine
    name = (requested or "auto").strip().lower()
    metal = metal_capable(system, machine)
    if name not in CHOICES:
        raise UsageError(f"unknown --device {requested!r}.", hint=f"Use {', '.join(CHOICES)}.")
    if name == "metal" and not metal:
        raise UsageError(f"--device metal needs an Apple Silicon Mac; this is {system} {machine}.",
                         hint="Use --device cpu (or leave --device auto).")
    if name == "auto":
        name = "metal" if metal else "cpu"
        reason = f"auto on {system} {machine}"
    else:
        reason = "asked"
    return Compute(name, ALL_LAYERS if name == "metal" else 0, reason)


def layers(device: str) -> int:
    """The layers a *resolved* device name offloads (what an engine in a child process is handed)."""
    if device not in ("cpu", "metal"):
        raise ValueError(f"not a resolved device: {device!r}")
    return ALL_LAYERS if device == "metal" else 0


def for_resolved(device: str) -> Compute:
    """The ``Compute`` of a device name already resolved by ``choose`` (a spec's field in a child process)."""
    return Compute(device, layers(device), "resolved")
