"""The aarch64 bundle, checked under qemu against this machine's build, on the embedded model's Q8_0, Q4_0 and Q4_K_M.

    .venv/bin/python benchmarks/arm.py [--out DIR] [--tokens N]

For each file, `edgeq bundle --check` runs the cross-built llama.cpp under qemu-aarch64 once per CPU level the
bundle ships (armv8.0_1 on an emulated Cortex-A53, armv8.2_2 on a Cortex-A76 as in the Raspberry Pi 5, armv8.6_1
on qemu's `max` with 256-bit SVE) and compares it with this machine's build: the greedy text for a fixed prompt,
and llama-perplexity's KLD and top-1 agreement over 4 × 128 tokens of the evaluation text.  The Q8_0 file is
also served by the emulated board's ggml-rpc-server to this machine's llama-completion.  Speeds under emulation
mean nothing and are not reported.  The embedded model is dequantized from a Q4_1 file.

Writes ``benchmarks/results/arm.{json,md}`` and the table in ``docs/benchmarks/arm.md``.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from readme_table import publish  # noqa: E402

from edgeq.bundling import bundle  # noqa: E402
from edgeq.bundling.check import (  # noqa: E402
    CHECK_CHARS,
    CHECK_CTX,
    CHECK_WINDOWS,
    KLD_MARGIN,
    MAX_KLD_FLOOR,
    MIN_TOP1_CEILING,
    TOP1_MARGIN_PTS,
    check_folder,
)
from edgeq.conversion import convert  # noqa: E402
from edgeq.llamacpp import cross  # noqa: E402
from edgeq.quality.crosscheck import llama_perplexity_kld  # noqa: E402
from edgeq.sources.texts import default_text  # noqa: E402
from edgeq.system import cpu_name  # noqa: E402

QUANTS = ("Q8_0", "Q4_0", "Q4_K_M")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "models" / "bench-arm"))
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args()
    out = Path(args.out)
    made = convert(None, quants=list(QUANTS), outdir=out / "gguf", progress=False)  # the embedded model
    files = {o.variant: Path(o.path) for o in made.outputs}
    rows, runs = [], []
    for q in QUANTS:
        t0 = time.monotonic()
        res = bundle(files[q], outdir=out / f"bundle-{q}", progress=True)
        # check_folder, not bundle(check=True): a failed check is a result to record, not an exception.
        e, res.checks = check_folder(Path(res.folder), local=True, rpc=q == "Q8_0", n_predict=args.tokens,
                                     progress=True)
        runs.append({"quant": q, "seconds": round(time.monotonic() - t0, 1), **asdict(res), "envelope": asdict(e)})
        rows.append({"quant": q, "what": "host", "level": e.level, "kld_mean": e.kld_mean, "top1_pct": e.top1_pct,
                     "max_kld_mean": e.max_kld_mean, "min_top1_pct": e.min_top1_pct})
        for c in res.checks:
            rows.append({"quant": q, **asdict(c)})
            print(f"{q:7} {c.what:5} {c.level:10} loaded={c.loaded_level} same_text={c.same_text} "
                  f"kld={c.kld_mean} top1={c.top1_pct} passed={c.passed}", flush=True)
    # The control: the board's Q4_0 scored against the Q8_0 file's logits here (a real difference, which the
    # checks' bounds must be far from).
    text = default_text()[0][:CHECK_CHARS]
    control = llama_perplexity_kld(files["Q8_0"], files["Q4_0"], text, ctx=CHECK_CTX, windows=CHECK_WINDOWS, threads=2,
                                   model_tool=[*cross.emulator(cross.AARCH64, "armv8.2_2"),
                                               out / "bundle-Q4_0" / "bin" / "llama-perplexity"])
    rows.append({"quant": "Q4_0", "what": "control", "level": "armv8.2_2", **control})
    print("control", control, flush=True)
    result = {"host": cpu_name(), "host_arch": platform.machine(), "tokens": args.tokens,
              "bounds": {"kld_margin": KLD_MARGIN, "max_kld_floor": MAX_KLD_FLOOR, "top1_margin_pts": TOP1_MARGIN_PTS,
                         "min_top1_ceiling": MIN_TOP1_CEILING},
              "levels": {k: asdict(v) for k, v in cross.AARCH64.levels.items()},
              "glibc_min": runs[0]["glibc_min"], "glibcxx_min": runs[0]["glibcxx_min"], "runs": runs, "checks": rows}
    (ROOT / "benchmarks" / "results" / "arm.json").write_text(json.dumps(result, indent=2) + "\n")
    render(result)


def render(r: dict) -> None:
    lines = ["| file | run | CPU level (emulated CPU) | level ggml loaded | greedy text | KLD mean | KLD p99 | top-1 % |",
             "|---|---|---|---|---|---|---|---|"]
    checks = [c for c in r["checks"] if c["what"] in ("local", "rpc")]
    for c in r["checks"]:
        if c["what"] == "control":
            lines.append(f"| *control: {c['quant']} on the board against Q8_0 here* | {c['level']} | — | — | — | "
                         f"*{_f(c['kld_mean'])}* | *{_f(c.get('kld_p99'))}* | *{_f(c['top1_pct'], '.2f')}* |")
            continue
        if c["what"] == "host":
            lines.append(f"| {c['quant']} | *this machine: its `{c['level']}` level against its best* | — | — | — | "
                         f"*{_f(c['kld_mean'])}* | — | *{_f(c['top1_pct'], '.2f')}* |")
            continue
        text = ("same" if c["same_text"] else f"parts at char {c['first_difference']}") + (
            "" if c["what"] == "local" else
            f"; {'same as' if c['same_as_board'] else 'NOT'} the board's own with its server's kernels (no repacking)")
        lines.append(f"| {c['quant']} | {'on the board' if c['what'] == 'local' else 'RPC server on the board'} | "
                     f"{c['level']} ({c['qemu_cpu'].split(',')[0]}) | {c['loaded_level']} | {text} | "
                     f"{_f(c['kld_mean'])} | {_f(c['kld_p99'])} | {_f(c['top1_pct'], '.2f')} |")
    b = r["bounds"]
    lines += ["", f"{sum(c['passed'] for c in checks)} of {len(checks)} checks passed. Bounds per file: mean KLD ≤ "
                  f"max({b['max_kld_floor']:g}, {b['kld_margin']:g}× this machine's own spread), top-1 ≥ "
                  f"min({b['min_top1_ceiling']:g}%, its spread − {b['top1_margin_pts']:g} points). {r['tokens']} greedy "
                  f"tokens; logits over 4 × 128 tokens; host {r['host']}; the binaries need glibc ≥ {r['glibc_min']} "
                  f"and GLIBCXX_{r['glibcxx_min']}. Embedded model: dequantized from a Q4_1 file."]
    publish("arm", "\n".join(lines))


def _f(x: float | None, spec: str = ".2e") -> str:
    return "—" if x is None else format(x, spec)


if __name__ == "__main__":
    main()
