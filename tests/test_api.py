"""The library: every verb a function of the same name, a plain result that serialises, an import that changes nothing.

The verbs are called directly, on the embedded model's GGUFs the session converts once (``embedded_outputs``),
with the smallest settings that still run the real engines; each command's own behaviour is its module's tests.
"""
from __future__ import annotations

import csv
import dataclasses
import importlib.util
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import edgeq
import edgeq.quality
from edgeq.output import to_jsonable

# Every command of the CLI and its library function (`eval` is `evaluate`: `eval` is Python's own).
VERBS = {"bench": "bench", "bundle": "bundle", "convert": "convert", "doctor": "doctor", "download": "download",
         "eval": "evaluate", "inspect": "inspect", "plan": "plan", "report": "report", "run": "run", "ship": "ship",
         "tune": "tune", "upload": "upload", "verify": "verify"}


def _json(result: object) -> dict:
    """The result as the CLI's --json prints it, through a real JSON round trip (no NaN, no objects)."""
    assert dataclasses.is_dataclass(result) and not isinstance(result, type)
    return json.loads(json.dumps(to_jsonable(result), allow_nan=False))


def test_every_command_is_a_library_function_of_its_name():
    from edgeq.cli import cli

    assert set(cli.commands) - {"rpc-server"} == set(VERBS)
    for name in VERBS.values():
        fn = getattr(edgeq, name)
        assert inspect.isfunction(fn) and fn.__doc__, name
        assert name in edgeq.__all__
        # No function hides a module of the same name: `import edgeq.<name>` would find nothing to import.
        assert importlib.util.find_spec(f"edgeq.{name}") is None, name


def test_a_verbs_package_is_reachable_beside_its_function():
    import edgeq.conversion.pipeline

    assert edgeq.conversion.pipeline.convert is edgeq.convert
    assert inspect.isfunction(edgeq.convert) and inspect.ismodule(edgeq.conversion)


def test_importing_edgeq_changes_nothing_and_loads_nothing_heavy():
    code = ("import os, sys; before = dict(os.environ); import edgeq; "
            "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items()); "
            "print([m for m in ('numpy', 'torch', 'transformers', 'llama_cpp', 'matplotlib') if m in sys.modules])")
    env = {k: v for k, v in __import__("os").environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_children_get_small_pages_without_the_import_setting_them():
    """The one process door passes numpy's page choice to every child it starts (what the import used to set)."""
    from edgeq.llamacpp import run_tool

    code = "import os; print(os.environ.get('NUMPY_MADVISE_HUGEPAGE'))"
    env_before = dict(__import__("os").environ)
    assert run_tool([sys.executable, "-c", code], name="python")[-1] == (
        env_before.get("NUMPY_MADVISE_HUGEPAGE") or "0")


def test_the_verbs_return_results_that_serialise(embedded_outputs: list[Path], tmp_path: Path):
    f16, q8, _ = embedded_outputs
    bench_json, eval_json = tmp_path / "bench.json", tmp_path / "eval.json"

    b = edgeq.bench([str(q8)], hf_variants=[], n_prompt=8, n_gen=4, batches=[1], reps=1, output=bench_json,
                    csv=tmp_path / "bench.csv", progress=False)
    assert isinstance(b, edgeq.BenchResults) and [r.status for r in b.runs] == ["ok"] * len(b.runs)
    assert _json(b)["runs"][0]["variant"] == "Q8_0"
    rows = list(csv.DictReader((tmp_path / "bench.csv").open()))
    assert {r["model_type"] for r in rows} == {"Q8_0"} and {r["test"] for r in rows} == {"pp", "tg"}

    text = tmp_path / "text.txt"  # a few windows' worth: the default play would be tokenized whole
    text.write_text(edgeq.quality.default_text()[0][:4000], encoding="utf-8")
    e = edgeq.evaluate([str(f16), str(q8)], quants=[], text=text, ctx=64, max_tokens=256, output=eval_json)
    assert isinstance(e, edgeq.EvalResults) and e.reference and e.reference.startswith("F16")
    row = _json(e)["rows"][1]
    assert row["model"]["variant"] == "Q8_0" and 0 <= row["kld_mean"] < 0.1 and row["ppl"] > 1

    p = edgeq.plan(str(q8), device="pi5-8gb", fit_params=False)
    assert isinstance(p, edgeq.PlanResult) and p.recommendation is not None
    assert _json(p)["rows"][0]["quant"]

    r = edgeq.report([bench_json, eval_json], tmp_path / "report")
    assert isinstance(r, edgeq.ReportResult) and Path(r.markdown).read_text().startswith("# edgeq report")
    assert _json(r)["charts"]

    g = edgeq.run(q8, "The capital of France is", n_predict=4, n_ctx=64)
    assert isinstance(g, edgeq.GenerateResult) and _json(g)["generated_tokens"] > 0


def test_evaluate_refuses_an_unknown_task_before_any_work(tmp_path: Path):
    with pytest.raises(edgeq.EdgeqError, match="'perplexity' is not an evaluation"):
        edgeq.evaluate(["missing.gguf"], task="perplexity", output=tmp_path / "e.json")  # type: ignore[arg-type]
    assert not (tmp_path / "e.json").exists()
