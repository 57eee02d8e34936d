#!/usr/bin/env python3
"""Fill ``vendor/llama.cpp`` from one pinned, sha256-checked source.

The sdist of llama-cpp-python carries the whole llama.cpp tree (converter,
gguf-py, C++ tools), so converter, quantizer and runtime all come from one
commit and never disagree.  Third-party source is never committed: this script
fetches it at set-up time with pip (the one registry client we may use) and
keeps the archive in a cache so a fresh clone on the same machine does not
download it again.  Standard library only: it runs before the venv exists.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"
ARCHIVE = f"llama_cpp_python-{VERSION}.tar.gz"
SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
# Path of the llama.cpp tree inside the sdist.
INNER = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
# The sdist keeps the submodule's git HEAD: the exact llama.cpp commit.
HEAD = f"llama_cpp_python-{VERSION}/.git/modules/vendor/llama.cpp/HEAD"

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "vendor" / "llama.cpp"
STAMP = DEST / ".edgeq-source.sha256"
COMMIT = DEST / ".edgeq-commit"
CACHE = Path(os.environ.get("EDGEQ_CACHE", Path.home() / ".cache" / "edgeq")) / "sdist"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch() -> Path:
    """Return the checked archive, downloading it with pip when not cached."""
    archive = CACHE / ARCHIVE
    if archive.exists() and sha256(archive) == SHA256:
        return archive
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--no-binary", ":all:", f"{PACKAGE}=={VERSION}", "-d", tmp],
            check=True,
        )
        got = Path(tmp) / ARCHIVE
        digest = sha256(got)
        if digest != SHA256:
            sys.exit(f"error: {ARCHIVE} has sha256 {digest}, expected {SHA256}; "
                     "refusing to use it (was the release replaced?)")
        os.replace(got, archive)
    return archive


def extract(archive: Path) -> None:
    """Unpack the llama.cpp tree to a temporary folder, then move it into place."""
    DEST.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=DEST.parent, prefix=".llama.cpp."))
    try:
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
            tar.extractall(tmp, members=members, filter="data")
        (tmp / COMMIT.name).write_text(commit + "\n")
        (tmp / STAMP.name).write_text(SHA256 + "\n")
        if DEST.exists():
            shutil.rmtree(DEST)
        os.replace(tmp, DEST)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
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
