"""Finished llama.cpp builds kept outside the checkout, keyed by everything that goes into them.

A fresh clone on a machine that has built the same pinned tree with the same CMake files and compilers
takes the finished ``bin/`` folder from here instead of compiling (ccache still makes a compile that
cannot be skipped take a minute, not eight).  The key covers the pinned sdist's sha256, ``CMakeLists.txt``,
``cmake/``, ``native/``, the compilers' and CMake's versions, the CPU levels asked for and the platform:
change any of them and the build is made again.

Standard library only, and runnable as a script (``python3 edgeq/llamacpp/buildcache.py restore host
build``): ``scripts/setup.sh`` uses it before the virtual environment exists.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAMP = ".edgeq-build-key"  # in a build folder: the key of the build its bin/ holds
KEEP = 3  # entries kept per build name; older ones are removed when a new one is saved
INPUTS = ("vendor/llama.cpp/.edgeq-source.sha256", "CMakeLists.txt", "cmake", "native")


def cache_root() -> Path:
    return Path(os.environ.get("EDGEQ_CACHE") or Path.home() / ".cache" / "edgeq") / "builds"


def _version(cmd: str) -> bytes:
    try:
        return subprocess.run([cmd, "--version"], capture_output=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return b"missing"


def key(compilers: list[str], extra: list[str], repo: Path = REPO) -> str:
    """A digest of the build's inputs: sources, CMake files, compiler and CMake versions, and ``extra``."""
    h = hashlib.sha256()
    for name in INPUTS:
        p = repo / name
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(repo)).encode() + b"\0")
            h.update(f.read_bytes() if f.is_file() else b"missing")
    for cmd in [*compilers, "cmake"]:
        h.update(cmd.encode() + b"\0" + _version(cmd))
    h.update("\0".join([*extra, platform.system(), platform.machine()]).encode())
    return h.hexdigest()[:16]


def host_key() -> str:
    """The key of this machine's own build, as ``scripts/setup.sh`` makes it."""
    variants = os.environ.get("EDGEQ_CPU_VARIANTS", "x64;haswell;zen4")
    return key([os.environ.get("CC", "cc"), os.environ.get("CXX", "c++")], [f"EDGEQ_CPU_VARIANTS={variants}"])


def restore(name: str, build_key: str, build_dir: Path) -> bool:
    """Make ``build_dir/bin`` the cached build of that key; False (nothing changed) when there is none."""
    if (build_dir / STAMP).is_file() and (build_dir / STAMP).read_text().strip() == build_key \
            and (build_dir / "bin").is_dir():
        return True
    entry = cache_root() / f"{name}-{build_key}"
    if not (entry / "bin").is_dir():
        return False
    build_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bin-", dir=build_dir))
    shutil.copytree(entry / "bin", tmp / "bin", symlinks=True)
    if (build_dir / "bin").exists():
        shutil.rmtree(build_dir / "bin")
    (tmp / "bin").rename(build_dir / "bin")
    tmp.rmdir()
    # A CMake cache from another key would make the next `cmake --build` here relink over the restored files
    # with stale settings; without it, a later build in this folder configures afresh.
    (build_dir / "CMakeCache.txt").unlink(missing_ok=True)
    (build_dir / STAMP).write_text(build_key + "\n")
    return True


def save(name: str, build_key: str, build_dir: Path) -> Path:
    """Keep ``build_dir/bin`` under its key (written whole, then renamed in); mark ``build_dir`` with the key."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    entry = root / f"{name}-{build_key}"
    if not (entry / "bin").is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
        shutil.copytree(build_dir / "bin", tmp / "bin", symlinks=True)
        try:
            tmp.rename(entry)
        except OSError:  # another clone saved the same key meanwhile: theirs is as good
            shutil.rmtree(tmp, ignore_errors=True)
    old = sorted((p for p in root.glob(f"{name}-*") if p != entry), key=lambda p: p.stat().st_mtime)
    for p in old[:max(0, len(old) - (KEEP - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    (build_dir / STAMP).write_text(build_key + "\n")
    return entry


def forget(build_dir: Path) -> None:
    """The folder's build is about to change (a compile starts): it no longer matches any key."""
    (build_dir / STAMP).unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    """``restore|save host BUILD_DIR``: exit 0 when restored (or saved), 1 when the cache has no such build."""
    if len(argv) != 3 or argv[0] not in ("restore", "save", "forget") or argv[1] != "host":
        print("usage: buildcache.py restore|save|forget host BUILD_DIR", file=sys.stderr)
        return 2
    build_dir = Path(argv[2])
    if argv[0] == "forget":
        forget(build_dir)
        return 0
    k = host_key()
    if argv[0] == "restore":
        return 0 if restore("host", k, build_dir) else 1
    save("host", k, build_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
