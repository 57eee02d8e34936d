"""The build cache (issue 31): a fresh clone reuses a finished llama.cpp build only when every input is the same."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeq.llamacpp import buildcache


def _tree(root: Path) -> Path:
    for rel, text in (("vendor/llama.cpp/.edgeq-source.sha256", "832db069"), ("CMakeLists.txt", "project(x)"),
                      ("cmake/aarch64-linux-gnu.cmake", "set(X 1)"), ("native/bandwidth.c", "int main(){}")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.mark.parametrize("change", ["vendor/llama.cpp/.edgeq-source.sha256", "CMakeLists.txt",
                                    "cmake/aarch64-linux-gnu.cmake", "native/bandwidth.c", "native/new.c",
                                    "compiler", "variants"])
def test_every_input_is_in_the_key(tmp_path, change):
    repo = _tree(tmp_path / "repo")
    before = buildcache.key(["cc"], ["x64;haswell"], repo)
    assert buildcache.key(["cc"], ["x64;haswell"], repo) == before  # the same inputs: the same key
    compilers, extra = ["cc"], ["x64;haswell"]
    if change == "compiler":
        compilers = ["aarch64-linux-gnu-gcc"]
    elif change == "variants":
        extra = ["x64"]
    else:
        (repo / change).write_text((repo / change).read_text() + " " if (repo / change).exists() else "new")
    assert buildcache.key(compilers, extra, repo) != before


def test_a_saved_build_is_restored_whole_into_a_fresh_folder_and_only_under_its_key(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEQ_CACHE", str(tmp_path / "cache"))
    first = tmp_path / "clone1" / "build"
    (first / "bin").mkdir(parents=True)
    (first / "bin" / "libllama.so.0").write_bytes(b"\x7fELF one")
    (first / "bin" / "libllama.so").symlink_to("libllama.so.0")
    buildcache.save("host", "k1", first)
    fresh = tmp_path / "clone2" / "build"
    assert not buildcache.restore("host", "k2", fresh) and not fresh.exists()  # another key: nothing to take
    (fresh).mkdir(parents=True)
    (fresh / "CMakeCache.txt").write_text("from another configuration")
    assert buildcache.restore("host", "k1", fresh)
    assert (fresh / "bin" / "libllama.so").is_symlink() and (fresh / "bin" / "libllama.so").read_bytes() == b"\x7fELF one"
    assert not (fresh / "CMakeCache.txt").exists() and (fresh / buildcache.STAMP).read_text().strip() == "k1"
    buildcache.forget(fresh)  # a compile starts here: the folder no longer claims the key
    assert not (fresh / buildcache.STAMP).exists()


def test_old_entries_are_pruned(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEQ_CACHE", str(tmp_path / "cache"))
    b = tmp_path / "build"
    (b / "bin").mkdir(parents=True)
    (b / "bin" / "tool").write_text("x")
    for i in range(buildcache.KEEP + 2):
        entry = buildcache.save("host", f"k{i}", b)
        os.utime(entry, (i, i))
    left = sorted(p.name for p in (tmp_path / "cache" / "builds").glob("host-*"))
    assert len(left) == buildcache.KEEP and f"host-k{buildcache.KEEP + 1}" in left


def test_the_set_up_script_can_run_it_before_the_venv_exists(tmp_path):
    """Standard library only: run as a file by the system Python, with edgeq not importable."""
    env = {**os.environ, "EDGEQ_CACHE": str(tmp_path / "cache"), "PYTHONPATH": ""}
    script = Path(buildcache.__file__)
    p = subprocess.run([sys.executable, "-I", str(script), "restore", "host", str(tmp_path / "build")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1 and not p.stderr  # an empty cache: build it
    p = subprocess.run([sys.executable, "-I", str(script), "bogus"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "usage" in p.stderr
