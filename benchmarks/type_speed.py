"""Speed per tensor type on this machine: pure files of one model whose rows fit every block size.

    .venv/bin/python benchmarks/type_speed.py make       # the model (random weights) and one --pure file per type
    .venv/bin/python benchmarks/type_speed.py measure    # llama-bench pp128 / tg16, every file once a round, interleaved
    .venv/bin/python benchmarks/type_speed.py check      # plan's per-type predictions against the measurements
    .venv/bin/python benchmarks/type_speed.py table [RAW ...]   # the factors, medians over runs (types.{json,md})
    TYPES_RAW=benchmarks/results/types-raw-check.json .venv/bin/python benchmarks/type_speed.py measure 5
    .venv/bin/python benchmarks/type_speed.py render benchmarks/results/types-raw-check.json   # the check of a later run

The model is a random-weight Llama with hidden 2048 and feed-forward 8192 (Llama-3.2-1B's widths, so no type falls
back to a legacy type), 6 layers and SmolLM2's 49k tokenizer, tied embeddings: 466M parameters.  Random weights
change nothing about speed.  Raw samples go to ``benchmarks/results/types-raw.json`` (``$TYPES_RAW``), the factors
to ``types.{json,md}``, the check of a later run to ``types-check.{json,md}``; both tables also to
``docs/benchmarks/types.md``.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TYPES = ("F16", "Q8_0", "Q6_K", "Q5_K", "Q5_0", "Q5_1", "Q4_K", "Q4_0", "Q4_1", "IQ4_XS", "IQ4_NL", "Q3_K", "Q2_K")
WORK = ROOT / "models" / "types-2048"
RAW = Path(os.environ.get("TYPES_RAW", ROOT / "benchmarks" / "results" / "types-raw.json"))
BIN = ROOT / "build" / "bin"
# One thread: on 2 shared cores a second thread spin-waits at every barrier while another process holds the
# other core, and generation collapses (F16 at 1.8-2.6 tok/s, 18 at one thread: results/types-raw-2threads-busy.json).
THREADS = int(os.environ.get("TYPES_THREADS", "1"))


def make() -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    hf = WORK / "hf"
    if not (hf / "config.json").is_file():
        torch.manual_seed(0)
        tok = AutoTokenizer.from_pretrained(ROOT / "models" / "hf" / "SmolLM2-135M-Instruct")
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=2048, intermediate_size=8192, num_hidden_layers=6,
                          num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True,
                          max_position_embeddings=4096, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        model = LlamaForCausalLM(cfg).to(torch.float16)
        model.save_pretrained(hf)
        tok.save_pretrained(hf)
    f16 = WORK / "types-F16.gguf"
    if not f16.is_file():
        subprocess.run([str(ROOT / ".venv" / "bin" / "edgeq"), "convert", str(hf), "--quant", "F16", "-o", str(WORK),
                        "--name", "types", "-q"], check=True)
        made = sorted(WORK.glob("*F16*.gguf"))
        if made and made[0] != f16:
            made[0].rename(f16)
    for ty in TYPES[1:]:
        dst = WORK / f"types-{ty}.gguf"
        if not dst.is_file():
            subprocess.run([str(BIN / "llama-quantize"), "--pure", str(f16), str(dst), ty, "2"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(ty, dst.stat().st_size, flush=True)


def _bench(path: Path, args: list[str]) -> float:
    out = subprocess.run([str(BIN / "llama-bench"), "-m", str(path), "-t", str(THREADS), "-r", "1", "-o", "json", *args],
                         check=True, capture_output=True, text=True).stdout
    return float(json.loads(out)[0]["avg_ts"])


def measure(rounds: int) -> None:
    files = {ty: WORK / f"types-{ty}.gguf" for ty in TYPES}
    raw: dict[str, object] = {"cpu": _cpu(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "threads": THREADS, "n_prompt": 128, "n_gen": 16, "rounds": rounds,
                              "sizes": {ty: p.stat().st_size for ty, p in files.items()},
                              "pp": {ty: [] for ty in TYPES}, "tg": {ty: [] for ty in TYPES}, "load": [],
                              "bandwidth_gbps": [_bandwidth()]}
    for r in range(rounds):
        order = TYPES if r % 2 == 0 else TYPES[::-1]  # alternate the order: drift within a round cancels
        raw["load"].append(os.getloadavg()[0])  # type: ignore[attr-defined]
        for ty in order:
            raw["pp"][ty].append(_bench(files[ty], ["-p", "128", "-n", "0"]))  # type: ignore[index]
            raw["tg"][ty].append(_bench(files[ty], ["-p", "0", "-n", "16"]))  # type: ignore[index]
        raw["bandwidth_gbps"].append(_bandwidth())  # type: ignore[attr-defined]
        RAW.write_text(json.dumps(raw, indent=1))
        print(f"round {r + 1}: " + ", ".join(f"{ty} {statistics.median(raw['tg'][ty]):.1f}"  # type: ignore[index]
                                             for ty in TYPES), flush=True)


def _bandwidth() -> float:
    from edgeq.llamacpp import measure_bandwidth

    bw = measure_bandwidth(threads=THREADS)
    return float(bw["read_gbps"]) if bw else 0.0


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _terms(path: Path) -> tuple[dict[str, int], dict[str, int], float]:
    """(bytes read per generated token by type, matmul weights by type, attention FLOP) of a file, as plan sees it."""
    from edgeq.planning import speed
    from edgeq.planning.size import tensor_bytes
    from edgeq.planning.source import from_gguf

    spec = from_gguf(path)
    sizes = [tensor_bytes(t.shape, ty) for t, ty in zip(spec.tensors, spec.current_types)]
    return (speed.type_bytes(spec, spec.current_types, sizes, fill_tokens=16),
            speed.weights_by_type(spec, spec.current_types), speed.attention_flops(spec, fill_tokens=64))


def _gflops() -> float:
    import psutil

    from edgeq.planning.devices import _flops_per_cycle
    from edgeq.system import cpu_features, system_info

    f = psutil.cpu_freq()
    ghz = (f.max or f.current) / 1000 if f and (f.max or f.current) else 3.0
    return system_info().physical_cores * ghz * _flops_per_cycle(cpu_features())


def derive_runs(raw_paths: list[Path]) -> dict[str, object]:
    """``derive`` of each run, and the per-type factors and Q4_0 efficiencies pooled over them.

    A type's speed relative to another moves up to 12% between quiet runs on this VM, and a run's level with it, so
    each run's efficiencies are first divided by the run's own level (their geometric mean over every type): the
    factors are medians of those, relative to Q4_0's, and no one type's noise (Q4_0's, as the reference) enters
    every factor.  Q4_0's efficiencies are its pooled factor times the median level."""
    runs = {p.name: derive(p) for p in raw_paths}
    out: dict[str, object] = {"runs": runs, "types": {}}
    pooled: dict[str, dict[str, float]] = {ty: {} for ty in TYPES}
    levels: dict[str, float] = {}
    for k, eff in (("tg", "tg_efficiency"), ("pp", "pp_gflops")):
        per_run = []
        for r in runs.values():
            values = {ty: r["types"][ty][eff] for ty in TYPES}  # type: ignore[index]
            level = statistics.geometric_mean(values.values())
            per_run.append((level, {ty: v / level for ty, v in values.items()}))
        for ty in TYPES:
            pooled[ty][k] = statistics.median(norm[ty] for _, norm in per_run)
        levels[k] = statistics.median(level for level, _ in per_run)
    for ty in TYPES:
        out["types"][ty] = {f"{k}_factor": round(pooled[ty][k] / pooled["Q4_0"][k], 3) for k in ("tg", "pp")}  # type: ignore[index]
    gflops = next(iter(runs.values()))["gflops_estimate"]
    out["q4_0_tg_efficiency"] = round(levels["tg"] * pooled["Q4_0"]["tg"], 4)
    out["q4_0_pp_efficiency"] = round(levels["pp"] * pooled["Q4_0"]["pp"] / gflops, 4)  # type: ignore[operator]
    return out


def derive(raw_path: Path = RAW) -> dict[str, object]:
    """Per-type factors relative to Q4_0 (plan/kernels.py's x86 table) and Q4_0's absolute efficiencies."""
    raw = json.loads(raw_path.read_text())
    bw = statistics.median(x for x in raw["bandwidth_gbps"] if x)
    gflops = _gflops()
    out: dict[str, object] = {"bandwidth_gbps": bw, "gflops_estimate": gflops, "types": {}}
    eff = {}
    for ty in TYPES:
        by_type, weights, attn = _terms(WORK / f"types-{ty}.gguf")
        tg, pp = statistics.median(raw["tg"][ty]), statistics.median(raw["pp"][ty])
        eff[ty] = (tg * sum(by_type.values()) / (bw * 1e9), pp * (2.0 * sum(weights.values()) + attn) / 1e9)
    ref = eff["Q4_0"]
    for ty in TYPES:
        out["types"][ty] = {"tg_factor": round(eff[ty][0] / ref[0], 3), "pp_factor": round(eff[ty][1] / ref[1], 3),  # type: ignore[index]
                            "tg_efficiency": round(eff[ty][0], 4), "pp_gflops": round(eff[ty][1], 2)}
    out["q4_0_tg_efficiency"] = round(ref[0], 4)
    out["q4_0_pp_efficiency"] = round(ref[1] / gflops, 4)
    return out


def check(raw_path: Path, calib_types: tuple[str, ...] = ("F16", "Q8_0", "Q4_K")) -> list[dict[str, object]]:
    """plan's per-type predictions against the measurements in ``raw_path``: uncalibrated (the kernel table, the
    bandwidth read in that run, this machine's FLOP/s estimate) and calibrated from ``calib_types``' runs only."""
    from edgeq.planning import kernels, speed
    from edgeq.planning.calibrate import fit_families

    raw = json.loads(raw_path.read_text())
    bw = statistics.median(x for x in raw["bandwidth_gbps"] if x)
    gflops = _gflops()
    terms = {ty: _terms(WORK / f"types-{ty}.gguf") for ty in TYPES}
    meas = {ty: (statistics.median(raw["pp"][ty]), statistics.median(raw["tg"][ty])) for ty in TYPES}
    eb = {ty: speed.effective_bytes(terms[ty][0], "x86") for ty in TYPES}
    ef = {ty: speed.effective_flops(terms[ty][1], terms[ty][2], "x86") for ty in TYPES}
    spreads = [(max(raw["tg"][t]) - min(raw["tg"][t])) / 2 / meas[t][1] for t in calib_types]
    fit = fit_families([(eb[t], sum(terms[t][1].values()), meas[t][1]) for t in calib_types], bw, spreads=spreads)
    pp_g = statistics.median(meas[t][0] * ef[t] for t in calib_types)
    rows = []
    for ty in TYPES:
        un_tg = speed.tg_tps(eb[ty], bandwidth_gbps=bw, efficiency=kernels.X86_TG_EFFICIENCY)[0]
        un_pp = kernels.X86_PP_EFFICIENCY * gflops * 1e9 / ef[ty]
        ca_tg = speed.tg_tps(eb[ty], bandwidth_gbps=bw, efficiency=fit.efficiency,
                             family_efficiency=fit.family_efficiency, overhead_s=fit.overhead_s)[0]
        ca_pp = pp_g / ef[ty]
        pp, tg = meas[ty]
        rows.append({"type": ty, "pp": round(pp, 1), "tg": round(tg, 2),
                     "pp_spread": [min(raw["pp"][ty]), max(raw["pp"][ty])], "tg_spread": [min(raw["tg"][ty]), max(raw["tg"][ty])],
                     "uncal_pp_err": round(un_pp / pp - 1, 3), "uncal_tg_err": round(un_tg / tg - 1, 3),
                     "cal_pp_err": round(ca_pp / pp - 1, 3), "cal_tg_err": round(ca_tg / tg - 1, 3),
                     "calibration_run": ty in calib_types})
    return rows


def table(raw_paths: list[Path]) -> None:
    """``benchmarks/results/types.{json,md}``: the runs plan's x86 table is made from, and the factors they give."""
    raws = {p.name: json.loads(p.read_text()) for p in raw_paths}
    derived = derive_runs(raw_paths)
    (ROOT / "benchmarks" / "results" / "types.json").write_text(json.dumps(derived, indent=1))
    lines = [f"**{name}**: {raw['threads']} thread(s), {raw['rounds']} rounds, {raw['date']}, {raw['cpu']}, "
             f"edgeq-bandwidth {min(raw['bandwidth_gbps']):.1f}–{max(raw['bandwidth_gbps']):.1f} GB/s, "
             f"load {min(raw['load']):.1f}–{max(raw['load']):.1f}  " for name, raw in raws.items()]
    lines += ["", "| type | MB | tg tok/s, each run (min–max) | pp tok/s, each run | tg per byte vs Q4_0: each run → table "
              "| pp per FLOP vs Q4_0: each run → table |", "|---|---|---|---|---|---|"]
    first = next(iter(raws.values()))
    for ty in TYPES:
        f, runs = derived["types"][ty], derived["runs"].values()  # type: ignore[index, attr-defined]
        tg = "; ".join(f"{statistics.median(r['tg'][ty]):.1f} ({min(r['tg'][ty]):.1f}–{max(r['tg'][ty]):.1f})" for r in raws.values())
        pp = "; ".join(f"{statistics.median(r['pp'][ty]):.0f}" for r in raws.values())
        lines.append(f"| {ty} | {first['sizes'][ty] / 1e6:.0f} | {tg} | {pp} | "
                     f"{', '.join(format(r['types'][ty]['tg_factor'], '.2f') for r in runs)} → **{f['tg_factor']:.2f}** | "
                     f"{', '.join(format(r['types'][ty]['pp_factor'], '.2f') for r in runs)} → **{f['pp_factor']:.2f}** |")
    gflops = next(iter(derived["runs"].values()))["gflops_estimate"]  # type: ignore[attr-defined]
    lines += ["", "The table: each run's per-byte (per-FLOP) rates over that run's geometric mean, the median over the runs, "
              "relative to Q4_0's; the columns before the arrow are each run's own ratios to its Q4_0.",
              "", f"Q4_0's own efficiency (its pooled rate at the runs' median level): "
              f"{derived['q4_0_tg_efficiency']:.2f} of edgeq-bandwidth's "
              f"reading, {derived['q4_0_pp_efficiency']:.2f} of the cores × GHz × FLOP/cycle estimate ({gflops:.0f} GFLOP/s)."]
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from readme_table import publish

    publish("types", "\n".join(lines))


def drift(table_runs: list[Path], later: list[Path]) -> dict[str, list[float]]:
    """Per type, each run's tg rate per byte over that run's level, relative to the median of ``table_runs``:
    how far a type's speed relative to the others moved between runs (table runs first, then ``later``)."""
    norm = []
    for p in [*table_runs, *later]:
        eff = {ty: v["tg_efficiency"] for ty, v in derive(p)["types"].items()}  # type: ignore[attr-defined]
        level = statistics.geometric_mean(eff.values())
        norm.append({ty: e / level for ty, e in eff.items()})
    return {ty: [round(n[ty] / statistics.median(m[ty] for m in norm[:len(table_runs)]), 3) for n in norm]
            for ty in TYPES}


def render(raws: list[Path]) -> None:
    """``benchmarks/results/types-check.{json,md}``: plan's per-type predictions against runs made after the table."""
    lines, data = [], {}
    for raw_path in raws:
        raw = json.loads(raw_path.read_text())
        rows = check(raw_path)
        data[raw_path.name] = {"threads": raw["threads"], "date": raw["date"], "rows": rows,
                               "bandwidth_gbps": raw["bandwidth_gbps"], "load": raw["load"]}
        lines += [f"**{raw_path.name}**: {raw['threads']} thread(s), {raw['rounds']} rounds, {raw['date']}, "
                  f"edgeq-bandwidth {min(raw['bandwidth_gbps']):.1f}–{max(raw['bandwidth_gbps']):.1f} GB/s, "
                  f"load {min(raw['load']):.1f}–{max(raw['load']):.1f}", "",
                  "| type | tg measured (min–max) | uncalibrated | calibrated | pp measured (min–max) | uncalibrated "
                  "| calibrated |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            cal = " (calibration run)" if r["calibration_run"] else ""
            lines.append(f"| {r['type']} | {r['tg']:.1f} ({r['tg_spread'][0]:.1f}–{r['tg_spread'][1]:.1f}) | "
                         f"{r['uncal_tg_err']:+.0%} | {r['cal_tg_err']:+.0%}{cal} | {r['pp']:.0f} "
                         f"({r['pp_spread'][0]:.0f}–{r['pp_spread'][1]:.0f}) | {r['uncal_pp_err']:+.0%} | "
                         f"{r['cal_pp_err']:+.0%} |")
        worst = {k: max(abs(r[k]) for r in rows if not (k.startswith("cal") and r["calibration_run"]))
                 for k in ("uncal_tg_err", "cal_tg_err", "uncal_pp_err", "cal_pp_err")}
        data[raw_path.name]["worst"] = worst
        lines += ["", "worst: " + ", ".join(f"{k} {v:.0%}" for k, v in worst.items()), ""]
    table_runs = [ROOT / "benchmarks" / "results" / n
                  for n in json.loads((ROOT / "benchmarks" / "results" / "types.json").read_text())["runs"]]
    data["drift"] = drift(table_runs, raws)
    lines += ["**Drift**: each type's generation rate per byte over its run's level (the geometric mean over the types), "
              "relative to the median of the table's runs: 1.00 is the table's ratio to the other types.", "",
              "| type | " + " | ".join(p.name for p in [*table_runs, *raws]) + " |",
              "|---|" + "---|" * (len(table_runs) + len(raws))]
    lines += [f"| {ty} | " + " | ".join(f"{x:.2f}" for x in row) + " |" for ty, row in data["drift"].items()]
    (ROOT / "benchmarks" / "results" / "types-check.json").write_text(json.dumps(data, indent=1))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from readme_table import publish

    publish("types-check", "\n".join(lines).rstrip("\n"))


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "make"
    if what == "make":
        make()
    elif what == "measure":
        measure(int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    elif what == "derive":
        print(json.dumps(derive(Path(sys.argv[2]) if len(sys.argv) > 2 else RAW), indent=1))
    elif what == "check":
        for row in check(Path(sys.argv[2]) if len(sys.argv) > 2 else RAW):
            print(row)
    elif what == "table":  # the run the x86 table is made from, and its factors
        table([Path(a) for a in sys.argv[2:]] or [RAW])
    elif what == "render":  # render RAW... : the check of each later run, as Markdown and JSON
        render([Path(a) for a in sys.argv[2:]])
