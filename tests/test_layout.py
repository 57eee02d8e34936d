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
            if len(part) > 1:
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


# Function-level imports of edgeq's own modules hide the dependency graph; the only ones allowed keep
# `edgeq --help` from loading a heavy library (edgeq.quality loads numpy).
# The quality package loads numpy, which `edgeq --help` must not pay for.
LAZY_IMPORTS_ALLOWED = {("edgeq", "edgeq.quality"), ("edgeq.cli.eval", "edgeq.quality"), ("edgeq.tuning", "edgeq.quality"),
                        ("edgeq.tuning.verify", "edgeq.quality"), ("edgeq.tuning.probes", "edgeq.quality"),
                        ("edgeq.shipping", "edgeq.quality"), ("edgeq.bundling.check", "edgeq.quality")}
HEAVY = ("numpy", "torch", "transformers", "llama_cpp", "huggingface_hub", "matplotlib", "gguf", "safetensors")


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_edgeq_imports_its_own_modules_at_the_top():
    import ast

    found = []
    for path in sorted((REPO / "edgeq").rglob("*.py")):
        mod, is_pkg = _module(path), path.name == "__init__.py"
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("edgeq")):
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - max(0, node.level - 1)] if node.level else []
                    target = ".".join(base + [node.module or ""]).strip(".")
                    if not any(mod == m and target.startswith(t) for m, t in LAZY_IMPORTS_ALLOWED):
                        found.append(f"{path.relative_to(REPO)}:{node.lineno} imports {target}")
    assert found == []


def test_the_cli_loads_no_heavy_library():
    code = f"import sys, edgeq.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_module_is_far_over_300_lines():
    sizes = {str(p.relative_to(REPO)): len(p.read_text(encoding="utf-8").splitlines())
             for p in (REPO / "edgeq").rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > 300} == {}


def test_no_script_folder_shadows_the_standard_library():
    # A script run as `python benchmarks/x.py` puts its folder first on sys.path: a benchmarks/types.py made
    # every benchmark die at `import argparse` (enum imports the stdlib's types, and got ours).
    for folder in ("benchmarks", "scripts"):
        clash = sorted(p.name for p in (REPO / folder).glob("*.py") if p.stem in sys.stdlib_module_names)
        assert not clash, f"{folder}/{clash} shadow standard-library modules for every script there"
