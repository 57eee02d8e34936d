"""The docs tables of the two shell benchmarks on the embedded model, from the results files they write.

    .venv/bin/python benchmarks/embedded_tables.py             # both tables again from the JSON, nothing re-run

``benchmarks/embedded.sh`` (edgeq bench) writes ``results/embedded.json``: its English-prompt rows become the
table between the ``hypothesis`` markers of ``docs/benchmarks/hypothesis.md``.  ``benchmarks/eval_embedded.sh``
(edgeq eval ppl and choice) writes ``results/eval-{ppl,choice}.json``: joined per variant, they become the table
between the ``quality`` markers of ``docs/benchmarks/quality.md``.  Both scripts run this at their end; being
shell, they have no render step of their own, and ``edgeq report`` makes a report, not the docs' tables.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))

from readme_table import publish  # noqa: E402

MIB = 2**20


def hypothesis(bench: dict[str, Any], prompt: str = "en") -> str:
    """One row per backend, variant and batch of the bench run, for one prompt (the other's rows are in the
    report): speeds, peak RSS, bits per weight and the roofline fraction the run itself computed."""
    roof = {(r["backend"], r["variant"], r["batch"], r["prompt"]): r["fraction"] for r in bench["roofline"]["rows"]}
    env, bw = bench["environment"], bench["roofline"]["bandwidth"]
    lines = [f"{env['cpu']}, {env['threads']} threads, {env['date'][:10]}; edgeq-bandwidth {bw['read_gbps']} GB/s "
             f"during the run; prompt `{prompt}`, pp{bench['settings']['n_prompt']} / tg{bench['settings']['n_gen']}, "
             f"median of {bench['settings']['reps']} repetitions.", "",
             "| backend | variant | batch | pp tok/s | tg tok/s | ms/token | peak RSS | bits/weight | roofline |",
             "|---|---|---|---|---|---|---|---|---|"]
    runs = [r for r in bench["runs"] if r["prompt"] == prompt and r["status"] == "ok"]
    # Batch first, then llama.cpp (widest type first, the reference the quants are read against) before
    # transformers (in the run's own order: fp32, bf16, then the seeds' bitsandbytes).
    def order(r: dict[str, Any]) -> tuple[int, bool, float]:
        gguf = r["backend"] == "llama.cpp"
        return r["batch"], not gguf, -r["bits_per_weight"] if gguf else 0.0

    for r in sorted(runs, key=order):
        fraction = roof.get((r["backend"], r["variant"], r["batch"], prompt))
        lines.append(f"| {r['backend']} | {r['variant']} | {r['batch']} | {r['pp_tps']['median']:.0f} | "
                     f"{r['tg_tps']['median']:.1f} | {r['ms_per_token']:.1f} | {r['peak_rss_bytes'] / MIB:.0f} MiB | "
                     f"{r['bits_per_weight']:.2f} | {f'{fraction:.0%}' if fraction is not None else '–'} |")
    return "\n".join(lines)


def _g(x: float | None, fmt: str, suffix: str = "") -> str:
    return "–" if x is None else f"{x:{fmt}}{suffix}"


def quality(ppl: dict[str, Any], choice: dict[str, Any]) -> str:
    """One row per variant: ``eval ppl``'s perplexity and KLD against the reference, ``eval choice``'s accuracy."""
    picks = {r["model"]["variant"]: r for r in choice["rows"]}
    d = ppl["data"]
    lines = [f"{d['tokens_used']:,} tokens in {d['windows']} windows of {d['ctx']}; reference {ppl['reference']}; "
             f"choice on {choice['data']['items']} items; {ppl['threads']} threads, {ppl['created'][:10]}.", "",
             "| variant | size | bits/weight | PPL | ΔPPL | mean KLD | KLD p99 | top-1 | acc | acc_norm | "
             "same pick as the reference |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in ppl["rows"]:
        m, c = r["model"], picks.get(r["model"]["variant"], {})
        name = f"HF {m['variant']} (reference)" if r["delta_ppl_pct"] is None else m["variant"]
        lines.append(f"| {name} | {m['size_bytes'] / MIB:.1f} MiB | {_g(m['bits_per_weight'], '.2f')} | "
                     f"{r['ppl']:.2f} ± {r['ppl_stderr']:.2f} | {_g(r['delta_ppl_pct'], '+.2f', '%')} | "
                     f"{_g(r['kld_mean'], '.2g')} | {_g(r['kld_p99'], '.2g')} | {_g(r['top1_pct'], '.1f', '%')} | "
                     f"{_g(c.get('acc'), '.1f', '%')} | {_g(c.get('acc_norm'), '.1f', '%')} | "
                     f"{_g(c.get('agree_with_reference_pct'), '.1f', '%')} |")
    return "\n".join(lines)


def main() -> None:
    def load(name: str) -> dict[str, Any]:
        return json.loads((RESULTS / name).read_text())

    publish("hypothesis", hypothesis(load("embedded.json")))
    publish("quality", quality(load("eval-ppl.json"), load("eval-choice.json")))


if __name__ == "__main__":
    main()
