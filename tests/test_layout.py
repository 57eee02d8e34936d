"""The layout is enforced, not described: imports run downhill, no circles, ruff and mypy clean."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_imports_run_downhill():
    """The import-linter contract in pyproject.toml: cli → verbs → engines → sources → base."""
    out = subprocess.run([str(BIN / "lint-imports")], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "1 kept, 0 broken" in out.stdout


def test_no_import_circles():
    """No module of edgeq reaches itself through imports, function-level ones included."""
    import grimp

    graph = grimp.build_graph("edgeq")
    modules = sorted(graph.modules)
    index, low, on_stack, stack, circles = {}, {}, set(), [], []

    def visit(m: str) -> None:  # Tarjan's strongly connected components
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for n in graph.find_modules_directly_imported_by(m):
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            part = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                part.append(n)
                if n == m:
                    break
            # A package importing its own submodules (and they it) is how packages re-export; not a circle.
            if len(part) > 1 and not all(p == min(part) or p.startswith(min(part) + ".") for p in part):
                circles.append(sorted(part))

    for m in modules:
        if m not in index:
            visit(m)
    assert circles == []


def test_ruff_is_clean():
    out = subprocess.run([str(BIN / "ruff"), "check", "edgeq", "tests", "benchmarks", "scripts"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]


def test_mypy_is_clean_and_the_cli_needs_no_ignores():
    """mypy (its settings in pyproject.toml) on all of edgeq; the CLI is typed with the real result types."""
    cli = REPO / "edgeq" / "cli"
    assert not [p.name for p in cli.glob("*.py") if "type: ignore" in p.read_text()]
    out = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
