"""scripts/setup.sh on macOS, simulated: its platform decisions (scripts/prereqs.sh) run under bash with PATH shims
standing in for a Mac's tools (an old python3, shasum without sha256sum, xcode-select, an old CMake).

No Mac runs here; CI's macOS job runs the real set-up (`make demo`).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PREREQS = REPO / "scripts" / "prereqs.sh"
BASH = shutil.which("bash") or "/bin/bash"


def shim(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(f"#!{BASH}\n{body}\n")
    p.chmod(0o755)
    return p


def python_shim(folder: Path, name: str, new_enough: bool) -> Path:
    """A python that answers the version check the way a 3.9 (False) or a 3.12 (True) would."""
    return shim(folder, name, f"echo {new_enough}")


def run(call: str, path: list[Path], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``call`` after sourcing prereqs.sh, with only ``path`` on PATH (the shims, no system tool)."""
    return subprocess.run([BASH, "-c", f'. "{PREREQS}"; {call}'], capture_output=True, text=True,
                          env={"PATH": ":".join(map(str, path)), **(env or {})})


def test_python_three_nine_is_passed_over_for_a_newer_one_or_homebrews(tmp_path):
    bin_, brew = tmp_path / "bin", tmp_path / "opt-homebrew-bin"
    python_shim(bin_, "python3", False)  # macOS's own /usr/bin/python3: 3.9
    out = run(f'find_python "{brew}"', [bin_])
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "needs Python >= 3.10" in out.stderr and "brew install python@3.12" in out.stderr
    python_shim(brew, "python3.12", True)
    assert run(f'find_python "{brew}"', [bin_]).stdout.strip() == f"{brew}/python3.12"
    python_shim(bin_, "python3.11", True)  # on PATH wins over a folder searched after it
    assert run(f'find_python "{brew}"', [bin_]).stdout.strip() == f"{bin_}/python3.11"
    out = run(f'find_python "{brew}"', [bin_], {"PYTHON": str(bin_ / "python3")})
    assert out.returncode == 1 and "PYTHON=" in out.stderr and "not a Python >= 3.10" in out.stderr


def test_hashing_uses_shasum_where_there_is_no_sha256sum(tmp_path):
    mac = tmp_path / "mac"
    mac.mkdir()
    if not shutil.which("shasum"):
        pytest.fail("perl's shasum is missing here (Debian: perl package); the macOS route cannot be checked")
    (mac / "shasum").symlink_to(shutil.which("shasum"))
    for cmd in ("printf", "cut"):  # bash builtin printf; cut for the caller's pipe
        if shutil.which(cmd):
            (mac / cmd).symlink_to(shutil.which(cmd))
    perl = shutil.which("perl")
    assert perl
    (mac / "perl").symlink_to(perl)
    out = run("printf abc | sha256", [mac])
    assert out.stdout.split()[0] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", out.stderr
    out = run("printf abc | sha256", [tmp_path / "nothing"])
    assert out.returncode == 1 and "needs sha256sum (coreutils) or shasum (perl)" in out.stderr


def test_each_missing_prerequisite_on_a_mac_is_one_line(tmp_path):
    bin_ = tmp_path / "bin"
    shim(bin_, "xcode-select", "exit 2")  # no command-line tools installed
    out = run("check_prereqs Darwin", [bin_])
    lines = out.stderr.splitlines()
    assert out.returncode == 1 and len(lines) == 2
    assert "xcode-select --install" in lines[0] and "brew install cmake" in lines[1]
    shim(bin_, "xcode-select", "echo /Library/Developer/CommandLineTools")
    shim(bin_, "cmake", "echo 'cmake version 3.10.2'")
    out = run("check_prereqs Darwin", [bin_, Path("/usr/bin"), Path("/bin")])  # sed comes from the system
    assert out.returncode == 1 and out.stderr.splitlines() == [
        "setup: needs CMake >= 3.15 (found 3.10): `brew upgrade cmake`, `pip install cmake` or your system's newer package"]
    shim(bin_, "cmake", "echo 'cmake version 3.31.6'")
    out = run("check_prereqs Darwin", [bin_, Path("/usr/bin"), Path("/bin")])
    assert out.returncode == 0 and out.stderr == ""


def test_a_bare_linux_names_its_compiler_and_cmake(tmp_path):
    out = run("check_prereqs Linux", [tmp_path])
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 2
    assert "build-essential" in out.stderr and "apt-get install cmake" in out.stderr


@pytest.mark.parametrize("os_, arch, flags", [
    ("Darwin", "arm64", ["-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON"]),
    ("Darwin", "x86_64", ["-DGGML_METAL=OFF"]),
    ("Linux", "x86_64", ["-DEDGEQ_CPU_VARIANTS=x64;haswell;zen4"]),
    ("Linux", "aarch64", []),  # CMakeLists.txt's own aarch64 levels
])
def test_cmake_flags_build_metal_on_apple_silicon_only(os_, arch, flags):
    out = run(f"cmake_flags {os_} {arch}", [])
    assert out.stdout.splitlines() == flags


# Linux-only tools and what stands in for them on macOS; a script may use one only behind a check for it.
LINUX_ONLY = {"sha256sum": "shasum", "nproc": None, "readlink -f": None, "sed -i": None, "ldd": None,
              "lscpu": None, "free -": None, "/proc/": None, "apt-get": None}


def _code(text: str) -> str:
    """The script without comments and quoted messages (a hint naming apt-get is not a use of it)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    text = re.sub(r"'[^']*'", "''", text)
    return "\n".join(line.split(" #", 1)[0] for line in text.splitlines() if not line.lstrip().startswith("#"))


def test_setup_uses_no_linux_only_tool_unguarded():
    for script in (REPO / "scripts" / "setup.sh", PREREQS):
        code = _code(script.read_text())
        for tool, alternative in LINUX_ONLY.items():
            if tool not in code:
                continue
            name = tool.split()[0]
            # Used only where its presence is checked first (apt-get: Debian's optional extras; sha256sum: shasum).
            assert f"command -v {name}" in code, f"{script.name} runs {tool} without checking for it"
            if alternative:
                assert alternative in code, f"{script.name}: {tool} has no macOS alternative ({alternative})"
