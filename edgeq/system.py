"""Facts about this machine: CPU features, threads, memory, disk."""
from __future__ import annotations

import os
import platform
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .compute import metal_capable
from .errors import UsageError

# numpy's switch for transparent huge pages (it reads it once, when imported): see ``use_small_pages``.
HUGEPAGE_ENV = "NUMPY_MADVISE_HUGEPAGE"


def small_pages_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a process edgeq starts, with numpy's huge pages off unless the caller's environment chose.

    Every child (the converter, the workers) gets it this way, so a library import of edgeq never has to
    write the caller's environment for the choice to reach them (``use_small_pages`` says why it is made)."""
    return {HUGEPAGE_ENV: "0", **env}


def use_small_pages() -> None:
    """Have numpy give edgeq's arrays ordinary 4 KiB pages, unless ``NUMPY_MADVISE_HUGEPAGE`` says otherwise.

    numpy asks the kernel for transparent huge pages for every array of 4 MiB or more.  Where the kernel then
    compacts memory to find each one (THP defrag "madvise", Linux's default, on a machine whose page cache fills
    its memory), a fresh gigabyte of arrays cost 10 s of system time on the VMs here against 0.7 s in 4 KiB
    pages, and edgeq's arrays are large and short-lived: a window's log-probabilities, a dequantized tensor,
    the converter's copies (``benchmarks/pages.py`` measures what it costs each of them).  The variable also
    reaches the converter and the workers edgeq starts; numpy already imported (by a script, before edgeq) is
    switched too.  The CLI calls it first thing; ``import edgeq`` does not (a library import changes nothing),
    and a script may call it itself.  Huge pages' gain, fewer TLB misses, is a few per cent of a pass over such an array.
    """
    if HUGEPAGE_ENV in os.environ:
        return  # the user's choice, either way
    os.environ[HUGEPAGE_ENV] = "0"
    np = sys.modules.get("numpy")
    if np is not None:
        core = getattr(np, "_core", None) or getattr(np, "core", None)  # numpy 2, numpy 1
        switch = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
        if switch is not None:
            switch(False)


# CPU flags that decide which llama.cpp kernels run.
_X86_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile")


@dataclass
class SystemInfo:
    os: str
    machine: str
    cpu: str
    physical_cores: int
    logical_cores: int
    cpu_features: list[str] = field(default_factory=list)
    metal: bool = False
    ram_total_bytes: int = 0
    ram_available_bytes: int = 0


def cpu_features() -> list[str]:
    if platform.machine().lower() in ("arm64", "aarch64"):
        return ["neon"]
    flags = cpu_flags()
    return [f for f in _X86_FLAGS if f in flags]


def cpu_flags() -> set[str]:
    """Every flag /proc/cpuinfo lists for the first CPU (empty where there is no /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_metal() -> bool:
    """Apple Silicon Macs run llama.cpp on the GPU through Metal (``compute.metal_capable``: the one rule)."""
    return metal_capable(platform.system(), platform.machine())


THREADS_ENV = "EDGEQ_THREADS"


def default_threads() -> int:
    """Threads for llama.cpp and torch where none is asked: ``$EDGEQ_THREADS`` where set, else the physical cores
    (llama.cpp runs slower on hyper-threads).  On a machine other jobs share, fewer threads than cores is faster:
    ggml's threads spin at every barrier, and one whose core another process holds stalls the rest."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise UsageError(f"{THREADS_ENV}={raw!r}: expected a whole number of threads, 1 or more.",
                             hint=f"Unset {THREADS_ENV} to use every physical core, or pass --threads.")
        return int(raw)
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


# Where Linux shows a process its memory cgroup (v2: one unified tree; v1: the ``memory`` controller's tree).
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
# cgroup v1 writes a page-rounded 2**63 - 1 for "no limit"; nothing real is this large.
_NO_LIMIT = 1 << 60


def memory_bytes(*, cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> tuple[int, int]:
    """(total, available) bytes of memory this process may use: the host's, or less where a container's
    cgroup (v1 or v2, its own or an ancestor's) sets a limit.

    Available under a limit is the limit less what the cgroup holds that the kernel cannot drop (its usage
    without the inactive page cache, as ``docker stats`` and the kubelet count it).  psutil alone sees the
    host: a container given 8 GiB of a 64 GiB machine would plan for 64, and meet the OOM killer."""
    vm = psutil.virtual_memory()
    total, available = int(vm.total), int(vm.available)
    for limit, used in cgroup_limits(cgroup_root, proc_cgroup):
        total, available = min(total, limit), min(available, max(0, limit - used))
    return total, available


def cgroup_limits(root: Path, proc_cgroup: Path) -> list[tuple[int, int]]:
    """(limit, used) of every memory cgroup level from this process's own up to the root that has a limit."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    v2 = (root / "cgroup.controllers").exists()
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if v2 and parts[0] == "0":
            return _walk(root, parts[2], ("memory.max", "memory.current", "inactive_file"))
        if not v2 and "memory" in parts[1].split(","):
            return _walk(root / "memory", parts[2], ("memory.limit_in_bytes", "memory.usage_in_bytes",
                                                     "total_inactive_file"))
    return []


def _walk(top: Path, rel: str, names: tuple[str, str, str]) -> list[tuple[int, int]]:
    # In a container the cgroup tree is usually mounted at its own cgroup, while /proc/self/cgroup names
    # the path on the host (or "/"): then the mount point itself is the process's cgroup.
    here = top / rel.strip("/")
    if not here.is_dir():
        here = top
    out = []
    while True:
        limit = _read_int(here / names[0])
        if limit is not None and limit < _NO_LIMIT:
            used = _read_int(here / names[1]) or 0
            out.append((limit, max(0, used - _stat(here / "memory.stat", names[2]))))
        if here == top or top not in here.parents:
            return out
        here = here.parent


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):  # "max" (no limit), or no such file at this level
        return None


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == key:
                return int(v)
    except (OSError, ValueError):
        pass
    return 0


def system_info() -> SystemInfo:
    total, available = memory_bytes()
    return SystemInfo(
        os=f"{platform.system()} {platform.release()}",
        machine=platform.machine(),
        cpu=cpu_name(),
        physical_cores=psutil.cpu_count(logical=False) or 1,
        logical_cores=psutil.cpu_count(logical=True) or 1,
        cpu_features=cpu_features(),
        metal=has_metal(),
        ram_total_bytes=total,
        ram_available_bytes=available,
    )


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds ``path`` (or its nearest existing parent)."""
    p = Path(path).resolve()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free
