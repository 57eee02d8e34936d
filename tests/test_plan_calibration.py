"""`plan --calibrate` from bench results that travelled: another folder, another machine, the GGUFs gone."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeq.planning import devices
from edgeq.planning.calibrate import from_bench
from edgeq.planning.speed import FAMILIES

EDGEQ = str(Path(sys.executable).with_name("edgeq"))


def _synthetic(tmp_path: Path, *, with_terms: bool = True) -> tuple[Path, dict[str, float]]:
    """Two runs on files that never existed, whose speeds follow known efficiencies at 40 GB/s."""
    eff = {"F16": 0.8, "Q8_0": 0.6}
    runs = []
    for variant, fam in (("F16", {"F16": 10**9, "F32": 0}), ("Q8_0", {"Q8_0": 5 * 10**8})):
        tps = 1 / sum(b / (40e9 * eff[f]) for f, b in fam.items() if b)
        run = {"model": "m", "path": f"/nowhere/m-{variant}.gguf", "backend": "llama.cpp", "variant": variant,
               "device": "cpu", "batch": 1, "prompt": "en", "n_prompt": 128, "n_gen": 64, "status": "ok",
               "tg_tps": {"median": tps}, "pp_tps": {"median": 100.0}, "peak_rss_bytes": 2 * 10**9,
               "weight_bytes": sum(fam.values()), "n_params": 5 * 10**8}
        if with_terms:
            run["calibration"] = {"bytes_by_family": fam, "matmul_weights": 5 * 10**8, "resident_bytes": 10**9,
                                  "flops_per_token": 10**9}
        runs.append(run)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"schema": "edgeq-bench/1", "environment": {"cpu": "Test CPU"}, "settings": {},
                                "runs": runs, "roofline": {"bandwidth": {"read_gbps": 40.0}}}))
    return path, eff


def test_recorded_terms_give_the_known_answer_without_any_file(tmp_path):
    path, eff = _synthetic(tmp_path)
    cal = from_bench(path, repack_types=[])
    assert cal.tg_family_efficiency == pytest.approx(eff, rel=1e-3) and not cal.warnings
    for s in cal.samples:
        assert s["predicted_tg_tps"] == pytest.approx(s["tg_tps"], rel=1e-3)
    assert cal.overhead_bytes == 10**9 and cal.pp_gflops == pytest.approx(100.0)  # 100 tok/s × 1 GFLOP per token


def test_results_without_terms_or_files_are_warned_of(tmp_path):
    path, _ = _synthetic(tmp_path, with_terms=False)
    cal = from_bench(path, repack_types=[])
    assert len(cal.warnings) == 2 and "re-run `edgeq bench`" in cal.warnings[0]


@pytest.mark.slow
def test_calibration_travels_with_the_results(tmp_path, embedded_outputs):
    """Bench two real GGUFs, then calibrate (a) from the files themselves, (b) from the terms bench recorded,
    with the files deleted and from another folder: the same fit and predictions; and `plan` there."""
    here = tmp_path / "bench-here"
    here.mkdir()
    ggufs = [shutil.copy(p, here) for p in embedded_outputs if p.name.endswith(("Q8_0.gguf", "Q4_K_M.gguf"))]
    out = here / "edgeq-bench.json"
    # One thread: beside the other xdist worker on two cores, two threads spin at llama.cpp's barriers.
    p = subprocess.run([EDGEQ, "bench", *map(str, ggufs), "-p", "64", "-n", "16", "-r", "1", "--batch", "1", "-t", "1",
                        "-o", str(out), "--json"], capture_output=True, text=True, cwd=here, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    data = json.loads(out.read_text())
    assert all(Path(r["path"]).is_absolute() and r["fingerprint"] and r["calibration"] for r in data["runs"])
    # What the file says, computed now, is what bench recorded.
    stripped = tmp_path / "no-terms.json"
    stripped.write_text(json.dumps({**data, "runs": [{k: v for k, v in r.items() if k != "calibration"}
                                                     for r in data["runs"]]}))
    repack = devices.local_repack_types()
    from_files = from_bench(stripped, repack_types=repack)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = Path(shutil.copy(out, elsewhere / "results.json"))
    shutil.rmtree(here)
    travelled = from_bench(moved, repack_types=repack)
    assert travelled.tg_family_efficiency == from_files.tg_family_efficiency
    # No warning that the terms are missing (one that the machine was busy depends on what else runs beside it).
    assert not [w for w in travelled.warnings if "was busy" not in w], travelled.warnings
    assert travelled.overhead_bytes == from_files.overhead_bytes
    # Speeds are the benchmark's business (benchmarks/plan_user_path.py); here: the same prediction back,
    # whichever way the terms came, and norms counted under their own family, not lumped with the weights.
    assert [s["predicted_tg_tps"] for s in travelled.samples] == [s["predicted_tg_tps"] for s in from_files.samples]
    for s in travelled.samples:
        assert s["predicted_tg_tps"] > 0 and {f for f in FAMILIES if s.get(f"bytes_{f}")} >= {"F32"}
    assert from_bench(stripped, repack_types=repack).warnings  # the files are gone now: the fallback says so

    src = next(p for p in embedded_outputs if p.name.endswith("F16.gguf"))
    p = subprocess.run([EDGEQ, "plan", str(src.parent), "--quants", "Q8_0,Q4_K_M", "--calibrate", str(moved)],
                       capture_output=True, text=True, cwd=elsewhere, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    # No calibration warning but the one a busy machine earns (plan.calibrate: bench marked its results busy).
    warned = [ln for ln in p.stdout.splitlines() if "calibration warning" in ln and "was busy" not in ln]
    assert "calibration runs, measured tg tok/s → predicted back:" in p.stdout and not warned, warned
