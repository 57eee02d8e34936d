"""The devices llama.cpp's build sees here, as its tools report them (``llama-bench --list-devices``).

On a Mac the Metal device's total is its GPU's recommended working-set size (ggml-metal reports
``recommendedMaxWorkingSetSize`` as both total and free): the memory a model on Metal may use, about
two thirds of the RAM on an 8-16 GB Apple Silicon machine, not the RAM itself.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .build import Toolchain, find_toolchain
from .process import run_tool

MIB = 1024 * 1024
# common/arg.cpp: "  %s: %s (%zu MiB, %zu MiB free)"
_LINE = re.compile(r"^\s+(?P<name>[^:\s]+): (?P<desc>.*) \((?P<total>\d+) MiB, (?P<free>\d+) MiB free\)\s*$")


@dataclass(frozen=True)
class DeviceReport:
    name: str  # MTL0, CUDA0, RPC[host:port] ...
    description: str
    total_bytes: int
    free_bytes: int

    @property
    def metal(self) -> bool:
        return self.name.startswith("MTL")


def parse_device_list(lines: Iterable[str]) -> list[DeviceReport]:
    """The devices in llama.cpp's ``--list-devices`` output ("  (none)" on a CPU-only build: an empty list)."""
    out = []
    for line in lines:
        if m := _LINE.match(line.rstrip("\n")):
            out.append(DeviceReport(m["name"], m["desc"], int(m["total"]) * MIB, int(m["free"]) * MIB))
    return out


def list_devices(tc: Toolchain | None = None) -> list[DeviceReport]:
    """The GPU (and RPC) devices this build of llama.cpp finds on this machine."""
    tc = tc or find_toolchain()
    return parse_device_list(run_tool([tc.tool("llama-bench"), "--list-devices"], name="llama-bench", timeout=60))
