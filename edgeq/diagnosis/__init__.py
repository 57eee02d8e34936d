"""`edgeq doctor`: is the toolchain whole, and do its parts agree?"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .. import compute, config, system
from .._version import __version__
from ..errors import ToolchainError
from ..llamacpp import (
    SETUP_HINT,
    TOOLS,
    find_toolchain,
    llama_cpp_version,
    source_stamp,
)
from ..llamacpp.rpc import PROTO_MAJOR, PROTO_MINOR
from .smoke import CpuPaths, SmokeReport, smoke_test


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None


@dataclass
class DoctorReport:
    ok: bool
    versions: dict[str, str]
    tools: dict[str, str | None]
    system: system.SystemInfo
    threads: int
    disk_free_bytes: int
    llama_system_info: str | None
    rpc: bool
    checks: list[Check] = field(default_factory=list)
    cpu_paths: CpuPaths | None = None  # the CPU level and features llama.cpp runs with here
    smoke: SmokeReport | None = None  # the tiny model's runs, one per type and path
    device: str = "cpu"  # where the smoke test ran llama.cpp (--device, resolved): cpu | metal


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _bindings_version() -> str:
    """The version of the llama_cpp bindings edgeq loads: a wheel's own copy (which has no distribution metadata,
    so its ``__version__``), else the installed llama-cpp-python's."""
    d = config.bindings_dir()
    if d is None:
        return _version("llama_cpp_python")
    found = re.search(r'^__version__\s*=\s*"([^"]+)"', (d / "llama_cpp" / "__init__.py").read_text(encoding="utf-8"),
                      re.MULTILINE)
    return found.group(1) if found else "unknown"


def doctor(device: str = "auto") -> DoctorReport:
    """Collect versions, paths and machine facts; ``ok`` is False when anything needed is wrong.

    ``device`` (auto, cpu, metal): where the smoke test runs its tiny model, edgeq's runner and llama-bench alike."""
    on = compute.choose(device)
    checks: list[Check] = []
    tc = None
    try:
        tc = find_toolchain(need_build=False)
        stamp = source_stamp(tc)
        checks.append(Check("llama.cpp source", stamp == config.LLAMA_CPP_SOURCE_SHA256,
                            f"{tc.llama_dir} (sha256 {str(stamp)[:12]}…)",
                            None if stamp == config.LLAMA_CPP_SOURCE_SHA256 else SETUP_HINT))
    except ToolchainError as e:
        checks.append(Check("llama.cpp source", False, e.message, SETUP_HINT))
    bin_dir = config.bin_dir()
    tools = {t: (str(bin_dir / t) if (bin_dir / t).exists() else None) for t in TOOLS}
    missing = [t for t, p in tools.items() if p is None]
    checks.append(Check("llama.cpp tools", not missing, f"{bin_dir}" + (f"; missing {', '.join(missing)}" if missing else ""),
                        SETUP_HINT if missing else None))
    versions = {
        "edgeq": __version__,
        "llama.cpp": llama_cpp_version(tc) if tc else "missing",
        "llama-cpp-python": _bindings_version(),
        "gguf": _version("gguf"),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "huggingface-hub": _version("huggingface_hub"),
    }
    lcp_ok = versions["llama-cpp-python"] == config.LLAMA_CPP_PYTHON_VERSION
    checks.append(Check("llama-cpp-python", lcp_ok, versions["llama-cpp-python"],
                        None if lcp_ok else f"Install llama-cpp-python=={config.LLAMA_CPP_PYTHON_VERSION} ({SETUP_HINT})"))
    checks.append(_gguf_check())
    smoke = None
    if tc and not missing and all(c.ok for c in checks):  # a smoke test on a broken install says nothing new
        smoke = smoke_test(tc, device=on.device)
        checks += _smoke_checks(smoke)
    cpu = smoke.cpu if smoke else None
    rpc = bool(smoke and smoke.rpc)
    if smoke and smoke.cpu:
        checks.append(_rpc_check(rpc))
    sys_facts = system.system_info()
    return DoctorReport(
        ok=all(c.ok for c in checks), versions=versions, tools=tools, system=sys_facts,
        threads=system.default_threads(), disk_free_bytes=system.free_disk_bytes(config.models_dir()),
        llama_system_info=cpu.system_info if cpu else None, rpc=rpc, checks=checks, cpu_paths=cpu, smoke=smoke,
        device=on.device)


def _gguf_check() -> Check:
    """The converter needs the gguf-py of the vendored tree, not PyPI's older release.

    The converter puts its tree's gguf-py first on its path (a pip-installed edgeq carries it there);
    only where the tree has none does the installed package serve."""
    tree = config.llama_dir() / "gguf-py" / "gguf"
    spec = importlib.util.find_spec("gguf")
    if (tree / "__init__.py").is_file():
        origin = tree / "__init__.py"
    elif spec is not None and spec.origin:
        origin = Path(spec.origin)
    else:
        return Check("gguf (vendored gguf-py)", False, "not installed", SETUP_HINT)
    lazy = origin.parent / "lazy.py"
    ok = lazy.exists() and "LazyChunkedTensor" in lazy.read_text(encoding="utf-8", errors="replace")
    return Check("gguf (vendored gguf-py)", ok, str(origin.parent),
                 None if ok else "Install vendor/llama.cpp/gguf-py as the gguf package (" + SETUP_HINT + ")")


def _smoke_checks(smoke: SmokeReport) -> list[Check]:
    """One check per smoke run, then one for the CPU level ggml chose."""
    fix = _crash_fix(smoke.cpu)
    # The fix for a crash or wrong numbers; any other failure (a missing level, a bad file) says its own.
    checks = [Check(f"{r.type} generates ({r.path})", r.ok, r.detail,
                    fix if not r.ok and (r.crash_signal or r.cosine_vs_f32 is not None) else None)
              for r in smoke.runs]
    cpu = smoke.cpu
    if cpu is None:
        return checks
    feats = " ".join(k for k, v in cpu.features.items() if v and k not in ("REPACK",)) or "-"
    detail = (f"ggml CPU level {cpu.variant or 'built in'}" + (f" (built: {', '.join(cpu.built)})" if cpu.built else "")
              + f"; AMX {'on' if cpu.amx else 'off'}; repack {'on' if cpu.features.get('REPACK') else 'off'}; {feats}")
    ok = cpu.variant == cpu.expected and (not cpu.amx or cpu.variant == "sapphirerapids")
    why = None if ok else (f"expected level {cpu.expected}: set-up chose the levels with EDGEQ_CPU_VARIANTS "
                           "(see the README's CPU paths); rerun `bash scripts/setup.sh`")
    checks.append(Check("CPU paths", ok, detail, why))
    return checks


def _crash_fix(cpu: CpuPaths | None) -> str:
    """What to do when the tiny model crashed or computed wrong numbers."""
    lower = "haswell" if cpu and cpu.variant not in (None, "haswell", "x64") else "x64"
    if cpu and cpu.amx:
        return ("ggml's AMX kernels are active: rebuild without them, "
                "EDGEQ_CPU_VARIANTS='x64;haswell;zen4' bash scripts/setup.sh")
    return (f"try a lower CPU level: {config.ENV_CPU_VARIANT}={lower} edgeq doctor; if that passes, build without "
            f"the level that failed: EDGEQ_CPU_VARIANTS='x64;haswell' bash scripts/setup.sh")


def _rpc_check(supported: bool) -> Check:
    """`run/bench --rpc` need libllama built with GGML_RPC; `rpc-server` needs ggml-rpc-server."""
    bin_dir = config.bin_dir()
    server = shutil.which("ggml-rpc-server", path=str(bin_dir))
    lib = next(iter(sorted(bin_dir.glob("libggml-rpc.*")) + sorted(bin_dir.glob("ggml-rpc.dll"))), None)
    missing = [what for what, ok in (("GGML_RPC in libllama", supported), ("ggml-rpc-server", server),
                                     ("libggml-rpc", lib)) if not ok]
    detail = (f"{server} + {lib.name} (protocol {_rpc_protocol()})" if not missing  # type: ignore[union-attr]
              else f"missing {', '.join(missing)}")
    return Check("RPC backend", not missing, detail, SETUP_HINT if missing else None)


def _rpc_protocol() -> str:
    return f"{PROTO_MAJOR}.{PROTO_MINOR}"
