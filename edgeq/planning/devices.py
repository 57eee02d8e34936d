"""Machines to plan for: this one (measured), a named device from the shipped table, or explicit figures."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from ..errors import UsageError
from ..llamacpp import DeviceReport, list_devices, measure_bandwidth
from ..system import cpu_features, has_metal, system_info
from . import kernels

DEVICES_FILE = "devices.json"
GIB = 1024**3
DEFAULT_HEADROOM_BYTES = GIB  # or 10% of usable RAM when that is less
# Defaults for machines without a table entry, until bench results calibrate them.
CPU_TG_EFFICIENCY, CPU_PP_EFFICIENCY = 0.5, 0.3
# ggml repacks these types into its CPU_REPACK buffer (vendor/llama.cpp/ggml/src/ggml-cpu/repack.cpp).
REPACK_AVX2 = ["Q4_0", "Q4_K", "IQ4_NL"]
REPACK_NEON_DOTPROD = ["Q4_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "Q8_0"]


@dataclass
class Device:
    name: str
    description: str
    backend: str  # cpu | metal
    ram_bytes: int
    usable_ram_bytes: int
    bandwidth_gbps: float
    cores: int
    gflops: float | None
    tg_efficiency: float
    pp_efficiency: float | None
    repack_types: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    arch: str | None = None  # its CPU architecture when edgeq cross-builds for it (`ship` puts those binaries in)


@lru_cache(maxsize=1)
def table() -> dict[str, Device]:
    """The shipped device table (edgeq/data/devices.json)."""
    raw = json.loads(resources.files("edgeq.data").joinpath(DEVICES_FILE).read_text(encoding="utf-8"))
    return {name: Device(name=name, **d) for name, d in raw["devices"].items()}


def named(name: str) -> Device:
    devices = table()
    key = name.strip().lower()
    if key not in devices:
        raise UsageError(f"unknown device {name!r}.", hint=f"Known devices: {', '.join(devices)}.")
    return devices[key]


def parse_size(text: str) -> int:
    """'8G', '8GB', '7.5GiB', '512M', '4096B' → bytes (G = GiB: RAM is sold in binary units).

    A unit is required: a bare '100' is as likely megabytes as bytes, and read as bytes it made a
    100-byte budget (every size option in the README is written with one)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise UsageError(f"cannot read {text!r} as a memory size.", hint="Write it like 8G, 7.5GB or 512M.")
    if float(m.group(1)) <= 0:
        raise UsageError(f"memory size {text!r} must be more than zero.", hint="Write it like 8G.")
    if not (m.group(2) or m.group(3)):
        raise UsageError(f"the size {text!r} has no unit.",
                         hint=f"Write it with one: {m.group(1)}MiB, {m.group(1)}G or {m.group(1)}B (B, K, M, G, T).")
    return int(float(m.group(1)) * 1024 ** "BKMGT".index((m.group(2) or "B").upper()))


def _flops_per_cycle(features: list[str]) -> int:
    if "avx512f" in features:
        return 64
    if "avx2" in features and "fma" in features:
        return 32
    return 16 if "neon" in features else 8


def local_repack_types() -> list[str]:
    """The types ggml's CPU backend repacks on this CPU (none when llama.cpp runs on Metal)."""
    feats = cpu_features()
    if has_metal():
        return []
    return REPACK_AVX2 if "avx2" in feats else REPACK_NEON_DOTPROD if "neon" in feats else []


def metal_budget(reports: list[DeviceReport], available_bytes: int) -> tuple[int, str] | None:
    """What a model on Metal may use here: the GPU's recommended working-set size from llama.cpp's device report
    (never more than the memory free now), with its source; None when the report names no Metal device."""
    mtl = next((r for r in reports if r.metal), None)
    if mtl is None:
        return None
    return (min(mtl.total_bytes, available_bytes),
            f"llama.cpp's device report: {mtl.name} {mtl.description}, recommendedMaxWorkingSetSize "
            f"{mtl.total_bytes / 2**20:.0f} MiB (capped by psutil's available memory)")


def this_machine(*, bandwidth_gbps: float | None = None) -> Device:
    """RAM available now (psutil), bandwidth from edgeq-bandwidth (the stream test bench uses), cores."""
    import psutil

    info = system_info()
    src = "measured by edgeq-bandwidth (read test)"
    if bandwidth_gbps is None:
        bw = measure_bandwidth()
        if not bw:
            raise UsageError("cannot measure this machine's memory bandwidth (edgeq-bandwidth is not built).",
                             hint="Pass --bandwidth GBps, or build the tools with `make setup`.")
        bandwidth_gbps = float(bw["read_gbps"])
    else:
        src = "given with --bandwidth or from calibration results"
    freq = psutil.cpu_freq()
    ghz = (freq.max or freq.current) / 1000 if freq and (freq.max or freq.current) else 3.0
    feats = cpu_features()
    metal = has_metal()
    repack = local_repack_types()
    x86 = not metal and kernels.kind_of("cpu", repack) == "x86"
    tg_eff, pp_eff = (kernels.X86_TG_EFFICIENCY, kernels.X86_PP_EFFICIENCY) if x86 else (CPU_TG_EFFICIENCY,
                                                                                        CPU_PP_EFFICIENCY)
    eff_src = f"Q4_0's, {kernels.X86_SOURCE}; until calibrated" if x86 else "assumption until calibrated"
    usable, usable_src = info.ram_available_bytes, "psutil (available now)"
    if metal:  # unified memory: Metal's budget is the GPU's working set, not the RAM
        usable, usable_src = metal_budget(list_devices(), usable) or (usable, usable_src)
    return Device(
        name="this machine", description=f"{info.cpu}, {info.physical_cores} cores", backend="metal" if metal else "cpu",
        ram_bytes=info.ram_total_bytes, usable_ram_bytes=usable, bandwidth_gbps=bandwidth_gbps,
        cores=info.physical_cores, gflops=None if metal else info.physical_cores * ghz * _flops_per_cycle(feats),
        tg_efficiency=tg_eff, pp_efficiency=None if metal else pp_eff, repack_types=repack,
        sources={"ram_bytes": "psutil (total)", "usable_ram_bytes": usable_src, "bandwidth_gbps": src,
                 "cores": "psutil (physical cores)",
                 "gflops": f"estimate: {info.physical_cores} cores × {ghz:.1f} GHz × {_flops_per_cycle(feats)} FLOP/cycle",
                 "tg_efficiency": eff_src, "pp_efficiency": eff_src,
                 "repack_types": "ggml-cpu repack.cpp for this CPU's features",
                 "kernels": kernels.SOURCES[kernels.kind_of("metal" if metal else "cpu", repack)]})


def generic(ram_bytes: int, bandwidth_gbps: float) -> Device:
    """``--ram 8G --bandwidth 68`` with no device: a CPU with those figures and default efficiencies."""
    return Device("given", "", "cpu", ram_bytes, ram_bytes, bandwidth_gbps, 0, None, CPU_TG_EFFICIENCY, None,
                  sources={"tg_efficiency": "assumption until calibrated"})


def override(d: Device, *, ram_bytes: int | None = None, bandwidth_gbps: float | None = None) -> Device:
    """A device with --ram / --bandwidth put in place of its own figures."""
    if bandwidth_gbps is not None and bandwidth_gbps <= 0:
        raise UsageError(f"--bandwidth must be more than zero (got {bandwidth_gbps:g}).", hint="Pass GB/s, e.g. 68.")
    out = Device(**{**d.__dict__, "sources": dict(d.sources)})
    if ram_bytes is not None:
        out.ram_bytes = out.usable_ram_bytes = ram_bytes
        out.sources["ram_bytes"] = out.sources["usable_ram_bytes"] = "--ram"
    if bandwidth_gbps is not None:
        out.bandwidth_gbps = bandwidth_gbps
        out.sources["bandwidth_gbps"] = "--bandwidth"
    if ram_bytes is not None or bandwidth_gbps is not None:
        out.description = f"{out.description} ({out.ram_bytes / GIB:.1f} GiB, {out.bandwidth_gbps:g} GB/s)".strip()
    return out


def headroom_bytes(device: Device, given: int | None = None) -> int:
    return given if given is not None else min(DEFAULT_HEADROOM_BYTES, device.usable_ram_bytes // 10)
