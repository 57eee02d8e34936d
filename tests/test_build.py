"""The built folder runs on lesser x86-64 CPUs: only the AVX-512 CPU level contains AVX-512 code.

ggml picks the CPU level at run time; everything else (libllama, libggml-base,
the tools, edgeq-bandwidth) is built for plain x86-64. A stray -march=native
anywhere would show here as AVX-512 (zmm) or AVX (ymm) instructions, and would
end in SIGILL on an AVX2-only machine. (benchmarks/cpu_paths.py runs the folder
on an emulated Haswell and Nehalem as well.)
"""
from __future__ import annotations

import platform
import re
import subprocess
from pathlib import Path

import pytest

from edgeq.llamacpp import cpu_variants, find_toolchain

pytestmark = pytest.mark.slow
X86 = platform.machine().lower() in ("x86_64", "amd64")
# Registers each level may use: x64 no AVX at all, haswell AVX2 (ymm), zen4 AVX-512 (zmm).
ALLOWED = {"x64": set(), "haswell": {"ymm"}, "zen4": {"ymm", "zmm"}}


def _elves(bin_dir: Path) -> dict[str, Path]:
    """Every ELF file in the folder by its plain name (``libllama.so``, not the versioned file it is)."""
    out = {}
    for f in sorted(bin_dir.iterdir()):
        if f.is_symlink() or not f.is_file():
            continue
        with open(f, "rb") as fh:
            if fh.read(4) == b"\x7fELF":
                out[re.sub(r"\.so\..*$", ".so", f.name)] = f
    return out


def _registers(path: Path, *, clones_may: bool = False) -> set[str]:
    """Wide registers the file's code uses.  ``clones_may``: except inside GCC ``target_clones`` versions
    (``f.avx2``, ``f.avx512f``), which the ifunc resolver only picks on a CPU that has the feature."""
    asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(path)], capture_output=True, text=True,
                         check=True).stdout
    if clones_may:
        parts = re.split(r"^[0-9a-f]+ <([^>]+)>:$", asm, flags=re.M)
        asm = "".join(body for name, body in zip(parts[1::2], parts[2::2])
                      if not re.search(r"\.(avx2|avx512f)$", name))
    return {r for r in ("ymm", "zmm") if f"%{r}" in asm}


def test_the_bandwidth_kernel_has_wide_versions_picked_at_run_time():
    exe = find_toolchain().bin_dir / "edgeq-bandwidth"
    asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(exe)], capture_output=True, text=True,
                         check=True).stdout
    if X86:  # the widest loads win: one SSE2 stream per core read ~15% less than llama.cpp's F32 decode
        assert "<sum_streams.avx512f>:" in asm and "<sum_streams.avx2>:" in asm and "resolver" in asm
        assert _registers(exe, clones_may=True) == set() and "zmm" in _registers(exe)


@pytest.mark.skipif(not X86, reason="x86-64 CPU levels")  # the ARM build is issue 21's
def test_only_the_cpu_levels_use_wide_vector_instructions():
    tc = find_toolchain()
    levels = cpu_variants(tc)
    assert levels == ["haswell", "x64", "zen4"]
    assert not list(tc.bin_dir.glob("libggml-cpu.so*")), "a CPU backend built in, for one CPU only"
    seen = {}
    for name, f in _elves(tc.bin_dir).items():
        m = re.fullmatch(r"libggml-cpu-(\w+)\.so", name)
        allowed = ALLOWED[m.group(1)] if m else set()
        seen[name] = _registers(f, clones_may=name == "edgeq-bandwidth")
        assert seen[name] <= allowed, f"{name} uses {sorted(seen[name] - allowed)} registers"
    assert seen["libggml-cpu-zen4.so"] == {"ymm", "zmm"} and seen["libggml-cpu-haswell.so"] == {"ymm"}
    assert {"libllama.so", "libggml-base.so", "llama-bench", "edgeq-bandwidth"} <= set(seen)
