"""The vendored llama.cpp build, and the one door through which edgeq runs its tools."""
from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import config
from .errors import NativeCrash, ToolchainError, ToolFailed

SETUP_HINT = "Run `bash scripts/setup.sh` (or `make setup`) from the edgeq checkout to fetch and build it."
DOCTOR_HINT = "Run `edgeq doctor`: it tests llama.cpp's CPU paths on this host and names the fix."

# Every tool the edgeq commands call; built together by the `edgeq-tools` CMake target.
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
        import atexit
        import tempfile

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


CRASH_CAUSES = {
    "SIGILL": "an instruction this CPU does not have: the build's CPU level is above this host's",
    "SIGSEGV": "a fault in its native code on this host (on Intel CPUs with AMX, ggml's AMX kernels are a known cause)",
    "SIGBUS": "a bad memory access (a model file changed or truncated while mapped, or a disk error)",
    "SIGABRT": "it stopped on a failed internal check",
    "SIGFPE": "an arithmetic fault in its native code",
}


def crash_error(returncode: int | None, doing: str, *, tail: Sequence[str] = (),
                engine: str = "llama.cpp") -> NativeCrash | None:
    """The one-line error for a child that died of a crash signal (``returncode`` < 0), else None."""
    if returncode is None or returncode >= 0:
        return None
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        return None
    if name not in CRASH_CAUSES:
        return None  # SIGKILL, SIGTERM: stopped from outside, not a crash
    lines = [ln.strip() for ln in tail if ln.strip() and not _PROGRESS_BAR.search(ln)]
    # An abort says why on its last lines (GGML_ASSERT ...); a segfault's last line is just progress.
    detail = next((ln for ln in reversed(lines) if re.search(r"error|assert|abort|fail", ln, re.IGNORECASE)), None)
    if engine != "llama.cpp":
        return NativeCrash(name, doing, "a fault in its native code", detail=detail[:200] if detail else None,
                           engine=engine)
    return NativeCrash(name, doing, CRASH_CAUSES[name], detail=detail[:200] if detail else None, hint=DOCTOR_HINT)


def _model_arg(args: Sequence[str]) -> str | None:
    for flag in ("-m", "--model"):
        if flag in args[:-1]:
            return Path(args[args.index(flag) + 1]).name
    return None


def use_our_libllama(tc: Toolchain | None = None) -> Path:
    """Point llama-cpp-python at our libllama; must run before ``import llama_cpp``."""
    tc = tc or find_toolchain()
    os.environ["LLAMA_CPP_LIB_PATH"] = str(tc.bin_dir)
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


ProgressFn = Callable[[str], None]
_PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm
_DISK_FULL = re.compile(r"No space left|Not enough free space|ENOSPC", re.IGNORECASE)
DISK_FULL_HINT = "The disk filled up: free some space, or pass -o on a larger disk; partial files were removed."


class ToolOutput(list):  # list[str]: callers index the tail lines as before
    """The last lines a tool printed, plus what it cost."""

    peak_rss_bytes: int | None = None  # the tool's own peak resident memory (children not counted)


def die_with_parent() -> None:
    """In the child, before exec: get SIGKILL if edgeq dies, even by SIGKILL (Linux only).

    The tools run in a session of their own (so a terminal's Ctrl-C reaches edgeq
    first and edgeq stops them), which would otherwise leave them running, and
    writing, after edgeq is killed.
    """
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _load_prctl() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the forked child must not load libraries
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


class _PeakRSS:
    """The child's own peak RSS, sampled from /proc/<pid>/status (VmHWM) while it runs.

    ``ru_maxrss`` from wait4 is no good on Linux: it survives fork + exec, so a
    small tool started by a large Python process reports the parent's peak.
    VmHWM is monotone, so the last sample is the peak up to then (growth in the
    final 10 ms can be missed). When wait4's figure is above our own peak it can
    only be the child's, and it is exact, so it wins.
    """

    INTERVAL_S = 0.01

    def __init__(self, pid: int) -> None:
        import threading

        self.path, self.peak = Path(f"/proc/{pid}/status"), 0
        self.parent_peak = own_peak_rss()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        if self.path.exists():
            self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                for line in self.path.read_text(encoding="ascii", errors="replace").splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak = max(self.peak, int(line.split()[1]) * 1024)
            except (OSError, ValueError):
                return
            self._done.wait(self.INTERVAL_S)

    def stop(self, ru_maxrss: int | None = None) -> int | None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        if ru_maxrss and self.parent_peak and ru_maxrss > self.parent_peak:
            return ru_maxrss
        return self.peak or ru_maxrss or None


def own_peak_rss() -> int | None:
    """This process's peak RSS in bytes (VmHWM), or None where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _wait(proc: subprocess.Popen[str], sampler: _PeakRSS) -> tuple[int, int | None]:
    """Reap the child: (exit code, peak RSS in bytes; wait4's figure only where /proc is missing)."""
    if not hasattr(os, "wait4"):
        return proc.wait(), sampler.stop()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return proc.returncode, sampler.stop(usage.ru_maxrss * scale)


def run_tool(argv: Sequence[str | os.PathLike[str]], *, name: str | None = None,
             on_line: ProgressFn | None = None, env: dict[str, str] | None = None,
             timeout: float | None = None, tail_lines: int = 40) -> ToolOutput:
    """Run a native tool (or the converter), streaming its output line by line.

    Output goes to ``on_line`` as it arrives; the last ``tail_lines`` lines are
    kept and returned, with the tool's peak RSS.  A non-zero exit raises
    ``ToolFailed`` naming the tool and its last line.  On Ctrl-C the child is
    stopped before re-raising, and if edgeq is killed outright the child is
    killed too, so no tool keeps writing after edgeq has gone.
    """
    args = [str(a) for a in argv]
    name = name or Path(args[0]).name
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    try:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", bufsize=1, env={**os.environ, **(env or {})},
                                start_new_session=True, preexec_fn=die_with_parent if _PRCTL else None)
    except OSError as e:
        raise ToolchainError(f"cannot start {name}: {e}.", hint=SETUP_HINT) from e
    sampler = _PeakRSS(proc.pid)
    # A deadline that holds even when the tool hangs with its output open (the loop below only
    # ends when it closes stdout): the timer stops it, which closes the pipe.
    expired = threading.Event()
    timer = threading.Timer(timeout, _expire, (proc, expired)) if timeout else None
    try:
        if timer:
            timer.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            if on_line:
                on_line(line)
        rc, peak = _wait(proc, sampler)
    except BaseException:
        sampler.stop()
        _stop(proc)
        raise
    finally:
        if timer:
            timer.cancel()
    if expired.is_set():
        raise ToolchainError(f"{name} did not finish within {timeout:g} s and was stopped.",
                             hint="A slow disk or a very large model can need longer; otherwise run `edgeq doctor`.")
    if rc != 0:
        model = _model_arg(args)
        crash = crash_error(rc, f"in {name}" + (f" on {model}" if model else ""), tail=list(tail))
        if crash:
            raise crash
        lines = [line for line in tail if not _PROGRESS_BAR.search(line)]  # the error, not the bar after it
        disk_full = any(_DISK_FULL.search(line) for line in lines)
        raise ToolFailed(name, rc, "\n".join(lines), hint=DISK_FULL_HINT if disk_full else None)
    out = ToolOutput(tail)
    out.peak_rss_bytes = peak
    return out


def _expire(proc: subprocess.Popen[str], expired: threading.Event) -> None:
    """The deadline passed: kill the tool's whole session; the reader sees its pipe close and reaps it."""
    expired.set()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _stop(proc: subprocess.Popen[str]) -> None:
    """Stop a child and its own children (it runs in a session of its own)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def measure_bandwidth(tc: Toolchain | None = None, *, mib: int = 512, reps: int = 5) -> dict[str, float] | None:
    """Memory read/copy bandwidth from our C kernel (``edgeq-bandwidth``); None if it is not built."""
    import json

    tc = tc or find_toolchain()
    exe = tc.bin_dir / "edgeq-bandwidth"
    if not exe.exists():
        return None
    out = run_tool([exe, str(mib), str(reps)], name="edgeq-bandwidth")
    return json.loads(out[-1])
