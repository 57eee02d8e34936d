"""llama.cpp for another CPU architecture: the cross build (aarch64 Linux, the edge boards), the binaries a
deployment needs from it, and running them here under user-mode emulation (qemu) to check them.

The cross build is the same pinned tree as the host's, configured with a CMake toolchain file into a build
folder of its own (``build-aarch64/``); ccache makes a rebuild take seconds.  Like the x86 build, it keeps
ggml's CPU backend as a few loadable levels, and ggml picks the best one for the board it lands on.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection

from .. import config
from ..errors import ToolchainError, UsageError
from ..files import folder_lock, sha256_file
from . import buildcache
from .build import Toolchain, _lib_name, cpu_variants
from .process import run_tool


@dataclass(frozen=True)
class Level:
    """One of ggml's CPU levels for a target, what has it, and the qemu CPU model that emulates such a CPU."""

    name: str
    features: str
    boards: str
    qemu_cpu: str


@dataclass(frozen=True)
class Target:
    """An architecture edgeq cross-builds llama.cpp for."""

    arch: str
    triple: str  # the GNU cross toolchain's prefix
    machine: str  # ELF e_machine of its binaries
    packages: str  # Debian packages that provide the compiler and the emulator
    levels: dict[str, Level]

    @property
    def toolchain_file(self) -> Path:
        return config.REPO_DIR / "cmake" / f"{self.triple}.cmake"

    @property
    def sysroot(self) -> Path:
        """The cross toolchain's target libraries (the dynamic loader, libc, libstdc++, libgomp)."""
        return Path("/usr") / self.triple

    @property
    def qemu(self) -> str:
        return f"qemu-{self.arch}"


# ggml's aarch64 Linux levels that the build makes (the CMakeLists' default EDGEQ_CPU_VARIANTS for aarch64).
# The qemu models: the Pi 5's own core, the Pi 3's, and for SVE + i8mm qemu's `max` with Graviton3's 256-bit
# vectors (qemu 7.2 has no Neoverse V1 model).
AARCH64 = Target(
    arch="aarch64", triple="aarch64-linux-gnu", machine="EM_AARCH64", packages="g++-aarch64-linux-gnu qemu-user",
    levels={
        "armv8.0_1": Level("armv8.0_1", "NEON", "any 64-bit ARM: Cortex-A53/A72 (Raspberry Pi 3, 4)", "cortex-a53"),
        "armv8.2_2": Level("armv8.2_2", "NEON + dotprod + fp16", "Cortex-A76 (Raspberry Pi 5), Neoverse N1",
                           "cortex-a76"),
        "armv8.6_1": Level("armv8.6_1", "+ SVE + i8mm", "Neoverse V1 (AWS Graviton3)",
                           "max,sve-default-vector-length=32"),
    })
TARGETS = {AARCH64.arch: AARCH64}

# What a board runs: llama.cpp's own front ends, the RPC server, edgeq's bandwidth probe.  Their libraries
# (and ggml's loadable backends) come with them.
DEPLOY_TOOLS = ("llama-completion", "llama-simple", "llama-bench", "llama-perplexity", "ggml-rpc-server",
                "edgeq-bandwidth")
# OpenMP's runtime ships with the tools (minimal board images may lack it), found through their $ORIGIN
# run-path.  libstdc++ and libgcc_s do not: every Debian-family system has them, and the cross toolchain's
# copies would raise the glibc a board needs from 2.34 to 2.36 (out go Ubuntu 22.04 and its boards).  The
# versions needed of both are recorded instead.
RUNTIME_LIBS = ("libgomp.so.1",)


def target(arch: str) -> Target:
    """The cross target called ``arch``, or the error naming the ones there are."""
    if arch in ("arm64", "aarch64"):
        arch = "aarch64"
    if arch not in TARGETS:
        # A name the user typed (--arch), not a broken toolchain: a usage error.
        raise UsageError(f"no cross build for {arch!r}.", hint=f"Use one of: {', '.join(TARGETS)}.")
    return TARGETS[arch]


def build_dir(t: Target) -> Path:
    """The cross build's folder, beside the host's (``build-aarch64``)."""
    return config.build_dir().with_name(f"{config.build_dir().name}-{t.arch}")


def toolchain(t: Target, *, need_build: bool = True) -> Toolchain:
    """The cross build as a ``Toolchain`` (its tools cannot run here except under ``emulator``)."""
    tc = Toolchain(config.llama_dir(), build_dir(t) / "bin")
    if need_build and not tc.libllama.exists():
        raise ToolchainError(f"the {t.arch} build is missing ({tc.libllama}).",
                             hint=f"Run `edgeq bundle --arch {t.arch}` (or `edgeq.llamacpp.cross.build('{t.arch}')`).")
    return tc


def host_refusal(t: Target, system: str, machine: str) -> str | None:
    """Why a ``system``/``machine`` host cannot make ``t``'s binaries (one line naming what it needs), or None.

    The cross build is Debian's GNU toolchain for ``t.triple`` with its sysroot, and the checks run the result
    under qemu's user-mode emulation: both Linux-only (Apple's clang makes Mach-O, and qemu-user runs Linux
    programs on a Linux kernel).  From a Mac the route is a Linux machine or container, the folder copied back."""
    if system == "Linux":
        return None
    return (f"{t.arch} Linux bundles are built on Linux only (this is {system} {machine}): the cross build needs "
            f"Debian's {t.triple}-g++ with its sysroot and {t.qemu} for the checks. Run the command on a Linux "
            f"machine or in a Linux container (Debian: `apt-get install {t.packages}`), then copy the folder.")


def require_host(t: Target) -> None:
    """Refuse, before any work, on a host that cannot cross-build for ``t`` (``host_refusal``)."""
    why = host_refusal(t, platform.system(), platform.machine())
    if why:
        raise ToolchainError(why)


def missing_packages(t: Target) -> list[str]:
    """What is missing here to cross-build for ``t`` and to emulate it: compiler, sysroot, qemu."""
    missing = [p for p in (f"{t.triple}-gcc", f"{t.triple}-g++") if shutil.which(p) is None]
    if not (t.sysroot / "lib").is_dir():
        missing.append(str(t.sysroot))
    if shutil.which(t.qemu) is None:
        missing.append(t.qemu)
    return missing


def _require(t: Target, *, emulate: bool) -> None:
    require_host(t)
    missing = [m for m in missing_packages(t) if emulate or m != t.qemu]
    if missing:
        raise ToolchainError(f"cannot build or run llama.cpp for {t.arch} here: {', '.join(missing)} not found.",
                             hint=f"Install them: `apt-get install {t.packages}` (Debian/Ubuntu).")


def build(arch: str = "aarch64", *, jobs: int | None = None, on_line: Callable[[str], None] | None = None) -> Toolchain:
    """Cross-build the pinned llama.cpp's tools for ``arch`` (cold: minutes; with ccache warm: seconds)."""
    t = target(arch)
    _require(t, emulate=False)
    tc = toolchain(t, need_build=False)
    if not (tc.llama_dir / "CMakeLists.txt").exists():
        raise ToolchainError(f"the vendored llama.cpp tree is missing ({tc.llama_dir}).",
                             hint="Run `bash scripts/setup.sh` (or `make setup`) from the edgeq checkout.")
    out = build_dir(t)
    # Paths hashed relative to the checkout, so every clone on this machine shares one ccache (as the set-up).
    env = {"CCACHE_BASEDIR": str(config.REPO_DIR)}
    cache = out / "CMakeCache.txt"
    out.mkdir(parents=True, exist_ok=True)
    key = buildcache.key([f"{t.triple}-gcc", f"{t.triple}-g++"], [t.arch], config.REPO_DIR)
    with folder_lock(out, doing=f"builds llama.cpp for {t.arch}"):  # two bundles at once: one build, not a race
        # Another clone's finished build of the same inputs (the set-up's build cache) is taken whole.
        if buildcache.restore(t.arch, key, out):
            return tc
        buildcache.forget(out)
        if not cache.exists() or str(t.toolchain_file) not in cache.read_text(errors="replace"):
            run_tool(["cmake", "-S", config.REPO_DIR, "-B", out, "-DCMAKE_BUILD_TYPE=Release",
                      f"-DCMAKE_TOOLCHAIN_FILE={t.toolchain_file}"], name="cmake", env=env, on_line=on_line,
                     tail_lines=60)
        run_tool(["cmake", "--build", out, "-j", str(jobs or os.cpu_count() or 2), "--target", "edgeq-tools"],
                 name="cmake --build", env=env, on_line=on_line, tail_lines=60)
        buildcache.save(t.arch, key, out)
    return tc


def emulator(t: Target, level: str) -> list[str]:
    """The command prefix that runs ``t``'s binaries here on an emulated CPU that has ``level``'s features."""
    _require(t, emulate=True)
    if level not in t.levels:
        raise ToolchainError(f"no {t.arch} CPU level {level!r}.", hint=f"Use one of: {', '.join(t.levels)}.")
    return [t.qemu, "-cpu", t.levels[level].qemu_cpu, "-L", str(t.sysroot)]


@dataclass
class Binaries:
    """The cross-built binaries copied for a deployment, as recorded in its manifest."""

    arch: str
    levels: list[str]  # ggml CPU levels shipped; ggml loads the best one the board has
    glibc_min: str  # the newest glibc symbol version they use: the board's glibc must be at least this
    glibcxx_min: str  # the same for the board's libstdc++ (GLIBCXX_3.4.30: GCC 12's)
    files: dict[str, str] = field(default_factory=dict)  # name under bin/ -> sha256


def copy_binaries(arch: str, dest: Path) -> Binaries:
    """Copy the deployable tools of the ``arch`` build, every library they load, and GCC's runtime, into ``dest``.

    Libraries are copied under the names the loader asks for (their sonames): no symlinks, so
    the folder survives any copy (scp, a zip, a Hub upload) as it is.
    """
    t = target(arch)
    tc = toolchain(t)
    dest.mkdir(parents=True, exist_ok=True)
    backends = [tc.bin_dir / _lib_name(f"ggml-cpu-{v}") for v in cpu_variants(tc)]
    # The other backends ggml loads from the folder (RPC); libggml-base is a plain library, reached by soname.
    backends += [p for p in tc.bin_dir.glob(_lib_name("ggml-*")) if not p.name.startswith(("libggml-cpu", "libggml-base"))]
    wanted = [tc.bin_dir / name for name in DEPLOY_TOOLS] + backends
    seen: dict[str, Path] = {}
    while wanted:
        path = wanted.pop()
        if path.name in seen:
            continue
        if not path.exists():
            raise ToolchainError(f"the {t.arch} build lacks {path.name} (looked in {tc.bin_dir}).",
                                 hint=f"Rebuild it: `edgeq bundle --arch {t.arch}` builds what is missing.")
        seen[path.name] = path
        for lib in needed(path):
            if (tc.bin_dir / lib).exists():
                wanted.append(tc.bin_dir / lib)
            elif lib in RUNTIME_LIBS:
                wanted.append(_runtime_lib(t, lib))
    for name, path in seen.items():
        shutil.copyfile(path, dest / name)  # follows symlinks: the file itself under the soname
        shutil.copymode(path, dest / name)
    return Binaries(arch=t.arch, levels=cpu_variants(tc),
                    glibc_min=max((version_needed(p, "GLIBC_") for p in seen.values()), key=_version_key),
                    glibcxx_min=max((version_needed(p, "GLIBCXX_") for p in seen.values()), key=_version_key),
                    files={name: sha256_file(dest / name) for name in sorted(seen)})


def _runtime_lib(t: Target, name: str) -> Path:
    for d in ("lib", "lib64"):
        if (p := t.sysroot / d / name).exists():
            return p
    raise ToolchainError(f"{name} for {t.arch} is not in {t.sysroot}.", hint=f"Install: `apt-get install {t.packages}`.")


def needed(path: Path) -> list[str]:
    """The shared libraries an ELF file names as DT_NEEDED."""
    with path.open("rb") as f:
        dyn = ELFFile(f).get_section_by_name(".dynamic")
        if not isinstance(dyn, DynamicSection):
            return []
        return [str(tag.needed) for tag in dyn.iter_tags() if tag.entry.d_tag == "DT_NEEDED"]  # type: ignore[attr-defined]


def version_needed(path: Path, prefix: str) -> str:
    """The newest symbol version with ``prefix`` (``GLIBC_``, ``GLIBCXX_``) an ELF file asks for ("0" if none)."""
    found = ["0"]
    with path.open("rb") as f:
        for sec in ELFFile(f).iter_sections():
            if isinstance(sec, GNUVerNeedSection):
                for _verneed, auxes in sec.iter_versions():
                    found += [a.name.removeprefix(prefix) for a in auxes
                              if a.name.startswith(prefix) and a.name[len(prefix):][:1].isdigit()]
    return max(found, key=_version_key)


def elf_machine(path: Path) -> str:
    """An ELF file's machine (``EM_AARCH64``, ``EM_X86_64``)."""
    with path.open("rb") as f:
        return str(ELFFile(f)["e_machine"])


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v))


def loaded_level(lines: Sequence[str]) -> str | None:
    """The CPU level ggml loaded, from a tool's log (``load_backend: loaded CPU backend from .../libggml-cpu-L.so``)."""
    for line in lines:
        if m := re.search(r"loaded CPU backend from .*ggml-cpu-([\w.]+?)\.(so|dylib|dll)", line):
            return m.group(1)
    return None
