"""The vendored llama.cpp build: where it is, what it is, and loading its libraries (ggml's CPU levels)."""
from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .. import config
from ..errors import ToolchainError
from .process import SETUP_HINT, run_tool

TOOLS = ("llama-quantize", "llama-bench", "llama-perplexity", "llama-imatrix", "llama-gguf-split", "edgeq-bandwidth",
         "llama-fit-params", "llama-completion", "llama-simple", "ggml-rpc-server")


def _lib_name(stem: str) -> str:
    return {"darwin": f"lib{stem}.dylib", "win32": f"{stem}.dll"}.get(sys.platform, f"lib{stem}.so")


@dataclass
class Toolchain:
    llama_dir: Path
    bin_dir: Path

    @property
    def converter(self) -> Path:
        return self.llama_dir / "convert_hf_to_gguf.py"

    @property
    def libllama(self) -> Path:
        return self.bin_dir / _lib_name("llama")

    def tool(self, name: str) -> Path:
        """The tool's path; under ``EDGEQ_CPU_VARIANT``, a copy that sees only that CPU level."""
        path = self.bin_dir / name
        if not path.exists():
            raise ToolchainError(f"llama.cpp tool {name} is not built (looked in {self.bin_dir}).",
                                 hint=SETUP_HINT)
        variant = config.cpu_variant()
        if variant and name != "edgeq-bandwidth":
            return _forced_level_dir(self, variant) / name
        return path


def find_toolchain(*, need_build: bool = True) -> Toolchain:
    """Locate the vendored tree and (optionally) its build; fail with the fix."""
    tc = Toolchain(config.llama_dir(), config.bin_dir())
    if not tc.converter.exists():
        raise ToolchainError(f"the vendored llama.cpp tree is missing ({tc.llama_dir}).", hint=SETUP_HINT)
    if need_build and not tc.libllama.exists():
        raise ToolchainError(f"the llama.cpp build is missing ({tc.libllama}).", hint=SETUP_HINT)
    return tc


def cpu_variants(tc: Toolchain) -> list[str]:
    """The CPU levels of ggml this build has as loadable libraries (``libggml-cpu-<level>``); [] if built in."""
    prefix, suffix = _lib_name("ggml-cpu-").rsplit(".", 1)[0], "." + _lib_name("x").rsplit(".", 1)[1]
    return sorted(p.name[len(prefix):-len(suffix)] for p in tc.bin_dir.glob(f"{prefix}*{suffix}"))


def level_bin_dir(tc: Toolchain, level: str, dest: Path) -> Path:
    """``dest``: build/bin with only one CPU level, for tools that pick their level themselves.

    ggml's tools load the CPU backends found beside their own executable (its
    real path), so the executables are copied (they are small launchers) and
    everything else is linked.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for f in tc.bin_dir.iterdir():
        if f.name.startswith(_lib_name("ggml-cpu-").rsplit(".", 1)[0]) and f.name != _lib_name(f"ggml-cpu-{level}"):
            continue
        if f.name in TOOLS:
            shutil.copy2(f, dest / f.name)
        elif not (dest / f.name).exists():
            (dest / f.name).symlink_to(f.resolve())
    return dest


_LEVEL_DIRS: dict[tuple[Path, str], Path] = {}


def _forced_level_dir(tc: Toolchain, level: str) -> Path:
    key = (tc.bin_dir, level)
    if key not in _LEVEL_DIRS:
        _check_level(tc, level)
        root = Path(tempfile.mkdtemp(prefix=f"edgeq-cpu-{level}-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _LEVEL_DIRS[key] = level_bin_dir(tc, level, root)
    return _LEVEL_DIRS[key]


def _check_level(tc: Toolchain, level: str) -> Path:
    """The library of a CPU level this build has, or the error naming the ones it has."""
    lib = tc.bin_dir / _lib_name(f"ggml-cpu-{level}")
    if lib.exists():
        return lib
    built = cpu_variants(tc)
    raise ToolchainError(f"{config.ENV_CPU_VARIANT}={level}: this build has no such CPU level "
                         f"(it has {', '.join(built) or 'none: its CPU backend is built in'}).",
                         hint=f"Unset {config.ENV_CPU_VARIANT}" + (
                             f", or build the level: EDGEQ_CPU_VARIANTS='x64;haswell;zen4;{level}' bash scripts/setup.sh"
                             if built else "."))


def import_llama_cpp(tc: Toolchain | None = None) -> Any:
    """``llama_cpp`` bound to our libllama, with ggml's backends loaded from our build.

    The build keeps its CPU backends as libraries, one per CPU level. llama.cpp's
    tools find them beside themselves; a Python process must name the folder.
    """
    tc = tc or find_toolchain()
    use_our_libllama(tc)
    import llama_cpp

    _load_backends(tc)
    return llama_cpp


def _load_backends(tc: Toolchain) -> None:
    import ctypes

    g = ctypes.CDLL(str(tc.bin_dir / _lib_name("ggml")))
    g.ggml_backend_reg_count.restype = ctypes.c_size_t
    variant = config.cpu_variant()
    if g.ggml_backend_reg_count():  # built in (macOS, a native build), or loaded already
        if variant and not cpu_variants(tc):
            _check_level(tc, variant)  # a level asked for that this build cannot give: say so
        return
    g.ggml_backend_load.restype, g.ggml_backend_load.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    if variant is None:
        g.ggml_backend_load_all_from_path(str(tc.bin_dir).encode())
    else:
        lib = _check_level(tc, variant)
        if not g.ggml_backend_load(str(lib).encode()):
            raise ToolchainError(f"{config.ENV_CPU_VARIANT}={variant}: ggml refused {lib.name} on this CPU "
                                 "(it needs instructions this CPU lacks).", hint=f"Unset {config.ENV_CPU_VARIANT}.")
        rpc = tc.bin_dir / _lib_name("ggml-rpc")
        if rpc.exists():
            g.ggml_backend_load(str(rpc).encode())
    if not g.ggml_backend_reg_count():
        raise ToolchainError(f"no ggml CPU backend in {tc.bin_dir} loads on this CPU "
                             f"(the build has {', '.join(cpu_variants(tc)) or 'none'}).", hint=SETUP_HINT)


def loaded_cpu_variant() -> str | None:
    """The ggml CPU level this process loaded (from /proc/self/maps; None where that cannot tell)."""
    try:
        maps = Path("/proc/self/maps").read_text(errors="replace")
    except OSError:
        return None
    found = re.search(r"libggml-cpu-([A-Za-z0-9_.]+?)\.so", maps)
    return found.group(1) if found else None


def use_our_libllama(tc: Toolchain | None = None) -> Path:
    """Point llama-cpp-python at our libllama; must run before ``import llama_cpp``."""
    tc = tc or find_toolchain()
    os.environ["LLAMA_CPP_LIB_PATH"] = str(tc.bin_dir)
    os.environ["MTMD_CPP_LIB"] = str(tc.bin_dir)  # libmtmd, for llama_cpp.mtmd_cpp (vision-language models)
    bindings = config.bindings_dir()
    if bindings is not None and str(bindings) not in sys.path:
        # The wheel carries the bindings of the same pinned release as its libllama; they go first, so an
        # unrelated llama-cpp-python installed beside edgeq cannot pair another ABI with this library.
        sys.path.insert(0, str(bindings))
    if "llama_cpp" in sys.modules:
        loaded = getattr(sys.modules["llama_cpp"].llama_cpp, "_base_path", None)
        if loaded and Path(loaded).resolve() != tc.bin_dir.resolve():
            raise ToolchainError(f"llama_cpp was already imported from {loaded}, not our build.")
    return tc.bin_dir


def source_stamp(tc: Toolchain) -> str | None:
    """sha256 of the archive the vendored tree came from (written by the vendor script)."""
    stamp = tc.llama_dir / ".edgeq-source.sha256"
    return stamp.read_text().strip() if stamp.exists() else None


def llama_cpp_commit(tc: Toolchain) -> str:
    """The llama.cpp commit the vendored tree is (recorded by the vendor script)."""
    stamp = tc.llama_dir / ".edgeq-commit"
    return stamp.read_text().strip() if stamp.exists() else "unknown"


def llama_cpp_version(tc: Toolchain) -> str:
    """One string naming exactly which llama.cpp converted and quantized a file."""
    return f"llama.cpp {llama_cpp_commit(tc)[:12]} (llama-cpp-python {config.LLAMA_CPP_PYTHON_VERSION} sdist)"


@lru_cache(maxsize=4)
def supported_architectures(llama_dir: Path) -> frozenset[str]:
    """HF ``architectures`` names the vendored converter registers (read, not imported)."""
    names: set[str] = set()
    pattern = re.compile(r"register\(([^)]*)\)")
    for py in sorted((llama_dir / "conversion").glob("*.py")) + [llama_dir / "convert_hf_to_gguf.py"]:
        if py.exists():
            for args in pattern.findall(py.read_text(encoding="utf-8", errors="replace")):
                names.update(re.findall(r"[\"']([A-Za-z0-9_]+)[\"']", args))
    return frozenset(names)


def measure_bandwidth(tc: Toolchain | None = None, *, mib: int = 512, passes: int = 5,
                      threads: int | None = None) -> dict[str, Any] | None:
    """Memory read/copy bandwidth from our C kernel (``edgeq-bandwidth``): the best of ``passes`` over
    ``mib`` MiB and 1–8 streams per thread, with ``threads`` POSIX threads (every online CPU when None; ``threads_ran`` says how many read); the
    best configuration's passes as ``read_samples_gbps``.  None if the tool is not built."""
    tc = tc or find_toolchain()
    exe = tc.bin_dir / "edgeq-bandwidth"
    if not exe.exists():
        return None
    out = run_tool([exe, str(mib), str(passes), str(threads or 0)], name="edgeq-bandwidth")
    return dict(json.loads(out[-1]))
