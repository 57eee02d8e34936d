"""What each way of building ggml's CPU backend costs, and whether each one computes the right text.

Compared on this machine, interleaved in rounds (this VM drifts ±20–40% within
minutes, so only ratios within one run mean anything), with llama-bench pp/tg on
the embedded SmolLM2-135M in Q8_0, Q4_K_M and Q4_0:

* ``native``: the old build, ``-march=native`` with one built-in CPU backend
  (``EDGEQ_CPU_NATIVE=ON``; on an Intel CPU with AMX this compiles the AMX kernels in);
* ``edgeq``: edgeq's build, CPU levels as loadable libraries, the best one for this CPU;
* ``edgeq --repack 0``: the other possible fix for the AMX crash (no extra buffer types at all);
* ``haswell`` and ``x64``: edgeq's lower levels forced, as an AVX2-only (x86-64-v3) or a
  baseline x86-64 machine would load them.

Each configuration also generates "The capital of France is" greedily with
``llama-simple``; the text must be the native build's (and contains "Paris" in Q8_0 and
Q4_K_M; this model's Q4_0 says something else). Then the folders run on *lesser
CPUs*, emulated by qemu-user (``apt-get install qemu-user``): a Haswell without
AVX-512 (x86-64-v3) and a Nehalem (SSE4.2 only). edgeq's folder must pick the
matching level and write the same text; the native one is expected to die of SIGILL.

    .venv/bin/python benchmarks/cpu_paths.py                       # builds build-native/ first if missing
    .venv/bin/python benchmarks/cpu_paths.py --rounds 5 --json benchmarks/results/cpu_paths.json
    .venv/bin/python benchmarks/cpu_paths.py --render    # the docs tables again from the JSON, nothing re-run

With ``--json``, the tables also go to ``benchmarks/results/cpu_paths.md`` and between the ``cpu-paths``
markers of ``docs/benchmarks/cpu-paths.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
RESULTS = REPO / "benchmarks" / "results" / "cpu_paths.json"

from readme_table import publish  # noqa: E402

from edgeq.llamacpp import find_toolchain, level_bin_dir  # noqa: E402
from edgeq.output import print_table  # noqa: E402
from edgeq.system import cpu_name  # noqa: E402

BIN = REPO / "build" / "bin"
NATIVE = REPO / "build-native"
MODELS = REPO / "models" / "SmolLM2-135M-Instruct"
TYPES = ("Q8_0", "Q4_K_M", "Q4_0")
PROMPT = "The capital of France is"


def ensure_models() -> dict[str, Path]:
    paths = {t: MODELS / f"SmolLM2-135M-Instruct-{t}.gguf" for t in TYPES}
    if not all(p.exists() for p in paths.values()):
        subprocess.run([str(REPO / ".venv" / "bin" / "edgeq"), "convert", "--quant", ",".join(TYPES)], check=True,
                       cwd=REPO)
    return paths


def ensure_native() -> Path:
    """The same pinned tree built the old way, for comparison (ccache makes a rebuild quick)."""
    if not (NATIVE / "bin" / "llama-bench").exists():
        subprocess.run(["cmake", "-S", str(REPO), "-B", str(NATIVE), "-DCMAKE_BUILD_TYPE=Release",
                        "-DEDGEQ_CPU_NATIVE=ON"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(NATIVE), f"-j{os.cpu_count()}", "--target", "llama-bench",
                        "llama-simple"], check=True, stdout=subprocess.DEVNULL)
    return NATIVE / "bin"


def bench(bin_dir: Path, model: Path, extra: list[str], threads: int, p: int, n: int, reps: int) -> dict[str, float]:
    out = subprocess.run([str(bin_dir / "llama-bench"), "-m", str(model), "-t", str(threads), "-p", str(p),
                          "-n", str(n), "-r", str(reps), "-o", "json", *extra], capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.returncode}  # type: ignore[dict-item]
    rows = json.loads(out.stdout)
    return {("pp" if r["n_prompt"] else "tg"): r["avg_ts"] for r in rows}


def generate(bin_dir: Path, model: Path, threads: int) -> str:
    out = subprocess.run([str(bin_dir / "llama-simple"), "-m", str(model), "-n", "8", PROMPT],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return out.stdout.strip().replace("\n", " ") if out.returncode == 0 else f"exit {out.returncode}"


EMULATED = ("Haswell-v4", "Nehalem")  # AVX2 without AVX-512; SSE4.2 without AVX


def emulated(bin_dir: Path, model: Path, cpu: str) -> dict[str, object]:
    """``llama-simple`` under qemu-user pretending to be ``cpu``: the level ggml loaded, the text, the exit."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None or platform.machine() != "x86_64":
        return {"cpu": cpu, "error": "qemu-user is not installed (apt-get install qemu-user)"}
    t0 = time.perf_counter()
    out = subprocess.run([qemu, "-cpu", cpu, str(bin_dir / "llama-simple"), "-m", str(model), "-n", "8", PROMPT],
                         capture_output=True, text=True, timeout=1800)
    level = next((ln.rsplit("libggml-cpu-", 1)[1].removesuffix(".so") for ln in out.stderr.splitlines()
                  if "loaded CPU backend" in ln and "libggml-cpu-" in ln), None)
    return {"cpu": cpu, "exit": out.returncode, "level": level, "text": out.stdout.strip().replace("\n", " "),
            "paris": "Paris" in out.stdout, "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("-p", type=int, default=128)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--render", action="store_true", help="only the docs tables again, from --json's file")
    args = ap.parse_args()
    if args.render:
        publish("cpu-paths", render(json.loads((args.json or RESULTS).read_text())))
        return
    models = ensure_models()
    tc = find_toolchain()
    with tempfile.TemporaryDirectory(prefix="edgeq-levels-") as tmp:
        configs = {"native": (ensure_native(), []), "edgeq": (BIN, []), "edgeq --repack 0": (BIN, ["--repack", "0"]),
                   "haswell": (level_bin_dir(tc, "haswell", Path(tmp) / "haswell"), []),
                   "x64": (level_bin_dir(tc, "x64", Path(tmp) / "x64"), [])}
        texts = {(c, t): generate(d, models[t], args.threads) for c, (d, _) in configs.items() for t in TYPES}
        samples: dict[tuple[str, str, str], list[float]] = {}
        for rnd in range(args.rounds):
            for t in TYPES:
                for c, (d, extra) in configs.items():  # interleaved: every config once per round and type
                    r = bench(d, models[t], extra, args.threads, args.p, args.n, args.reps)
                    for k, v in r.items():
                        samples.setdefault((c, t, k), []).append(v)
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
        emu = [{"build": c, "type": t, **emulated(d, models[t], cpu)} for cpu in EMULATED
               for c, d, types in (("edgeq", BIN, ("Q8_0", "Q4_0")), ("native", configs["native"][0], ("Q8_0",)))
               for t in types]
        for e in emu:
            e["same_text_as_here"] = e.get("text") == texts[("native", str(e["type"]))]
    med = {k: statistics.median(v) for k, v in samples.items()}

    def paired(c: str, t: str, k: str) -> float | None:
        """Median over rounds of this config / native in the same round: the drift cancels within a round."""
        a, b = samples.get((c, t, k)), samples.get(("native", t, k))
        return statistics.median(x / y for x, y in zip(a, b)) if a and b and len(a) == len(b) else None

    rows, table = [], []
    for t in TYPES:
        for c in configs:
            pp, tg = med.get((c, t, "pp")), med.get((c, t, "tg"))
            ok, same = "Paris" in texts[(c, t)], texts[(c, t)] == texts[("native", t)]
            rows.append({"config": c, "type": t, "pp_tps": pp, "tg_tps": tg,
                         "pp_vs_native": paired(c, t, "pp"), "tg_vs_native": paired(c, t, "tg"),
                         "text": texts[(c, t)], "paris": ok, "same_text_as_native": same})
            r = rows[-1]
            table.append([t, c, f"{pp:.0f}" if pp else "failed", f"{tg:.1f}" if tg else "failed",
                          f"{r['pp_vs_native']:.2f}×" if r["pp_vs_native"] else "-",
                          f"{r['tg_vs_native']:.2f}×" if r["tg_vs_native"] else "-", "yes" if ok else "no",
                          "yes" if same else "NO", texts[(c, t)][len(PROMPT):][:40]])
    print_table(f"CPU paths · {cpu_name()} · {args.threads} threads · pp{args.p}/tg{args.n} · median of "
                f"{args.rounds} interleaved rounds × {args.reps} reps",
                ["type", "build", "pp tok/s", "tg tok/s", "pp vs native*", "tg vs native*", "says Paris",
                 "same text as native", "continuation"], table)
    print("* median over rounds of the ratio to native in the same round", file=sys.stderr)
    print_table("the same folders on emulated CPUs (qemu-user)",
                ["CPU", "build", "type", "exit", "CPU level loaded", "says Paris", "same text as here", "text"],
                [[e["cpu"], e["build"], e["type"], e.get("exit", "-"), e.get("level") or "-",
                  "yes" if e.get("paris") else "no", "yes" if e["same_text_as_here"] else "NO",
                  str(e.get("text") or e.get("error"))[len(PROMPT):][:40]] for e in emu])
    if args.json:
        args.json.write_text(json.dumps({
            "machine": {"cpu": cpu_name(), "arch": platform.machine(), "threads": args.threads},
            "date": time.strftime("%Y-%m-%d"), "settings": vars(args) | {"json": str(args.json)},
            "rows": rows, "emulated": emu, "samples": {"|".join(k): v for k, v in samples.items()}}, indent=1) + "\n")
        publish("cpu-paths", render(json.loads(args.json.read_text())))


def render(data: dict) -> str:
    """The docs tables from the JSON: each configuration as its paired ratio to the native build (the figure that
    survives the drift), the native speeds for scale, and what each folder did on the emulated CPUs."""
    rows = {(r["config"], r["type"]): r for r in data["rows"]}
    types = list(dict.fromkeys(r["type"] for r in data["rows"]))
    configs = [c for c in dict.fromkeys(r["config"] for r in data["rows"]) if c != "native"]
    heads = {"edgeq": "edgeq (the level ggml picks here)", "edgeq --repack 0": "edgeq `--repack 0`",
             "haswell": "`haswell` level forced", "x64": "`x64` level forced"}

    def cell(r: dict) -> str:
        if not (r["pp_vs_native"] and r["tg_vs_native"]):
            return "failed"
        wrong = "" if r["same_text_as_native"] else ", **other text**"
        return f"pp {r['pp_vs_native']:.2f}×, tg {r['tg_vs_native']:.2f}×{wrong}"

    m, s = data["machine"], data["settings"]
    lines = [f"{m['cpu']}, {m['threads']} threads, {data['date']}; llama-bench pp{s['p']}/tg{s['n']}, {s['rounds']} "
             f"interleaved rounds × {s['reps']} repetitions; each figure is the median over rounds of the ratio to the "
             "native build in the same round.", "",
             "| type | " + " | ".join(heads.get(c, c) for c in configs) + " | native pp / tg tok/s |",
             "|---|" + "---|" * (len(configs) + 1)]
    for t in types:
        n = rows[("native", t)]
        lines.append(f"| {t} | " + " | ".join(cell(rows[(c, t)]) for c in configs)
                     + f" | {n['pp_tps']:.0f} / {n['tg_tps']:.1f} |")
    lines += ["", "The same folders on emulated CPUs (qemu-user):", "",
              "| emulated CPU | folder | type | exit | CPU level loaded | same text as here |", "|---|---|---|---|---|---|"]
    for e in data["emulated"]:
        lines.append(f"| {e['cpu']} | {e['build']} | {e['type']} | {e.get('exit', e.get('error'))} | "
                     f"{e.get('level') or '-'} | {'yes' if e['same_text_as_here'] else 'no'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
