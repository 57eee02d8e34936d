"""`edgeq report`: Markdown + PNG charts from bench result JSON (reads JSON only: no torch needed)."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..files import atomic_output, ensure_folder, read_results, schema_of
from .quality import quality_section
from .tables import first_prompt_batch1, label, markdown_table
from .tune import tune_section

PUBLISHED = "published-results.json"


@dataclass
class ReportResult:
    markdown: str
    charts: list[str] = field(default_factory=list)


def load_results(paths: list[Path]) -> list[dict[str, Any]]:
    return [read_results(p, "bench") for p in paths]


def published() -> dict[str, Any]:
    """The earlier studies' figures, copied into the package with their sources."""
    return json.loads(resources.files("edgeq.data").joinpath(PUBLISHED).read_text(encoding="utf-8"))


def charts(runs: list[dict[str, Any]], verdicts: list[dict[str, Any]], outdir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = first_prompt_batch1(runs)
    if not rows:
        return []
    labels = [label(r) for r in rows]
    made = []

    def save(fig: Any, name: str) -> None:
        path = outdir / name
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        made.append(name)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "pp_tps", "prompt processing"), (axes[1], "tg_tps", "generation")):
        vals = [r[key]["median"] for r in rows]
        err = [[v - r[key]["min"] for v, r in zip(vals, rows)], [r[key]["max"] - v for v, r in zip(vals, rows)]]
        ax.bar(labels, vals, yerr=err, color=["#4c72b0" if r["backend"] == "llama.cpp" else "#dd8452" for r in rows])
        ax.set_title(f"{title} (tokens/s, batch {rows[0]['batch']}, {rows[0]['prompt']})")
        ax.tick_params(axis="x", rotation=45)
    save(fig, "tokens_per_s.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(labels, [(r["peak_rss_bytes"] or 0) / 2**20 for r in rows], color="#55a868")
    ax.set_title("peak RSS (MiB)")
    ax.tick_params(axis="x", rotation=45)
    save(fig, "memory.png")

    vs = [v for v in verdicts if v["batch"] == rows[0]["batch"] and v["prompt"] == rows[0]["prompt"]
          and v.get("reference")]
    if vs:
        fig, ax = plt.subplots(figsize=(8, 4))
        names = [v["variant"] for v in vs]
        ref = [v["vs"][v["reference"]] for v in vs]
        x = range(len(vs))
        ax.bar([i - 0.2 for i in x], [r["pp"] for r in ref], width=0.4, label="prompt processing")
        ax.bar([i + 0.2 for i in x], [r["tg"] for r in ref], width=0.4, label="generation")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(list(x), names)
        ax.set_title("speed-up over full precision (GGUF quants ÷ F32 GGUF, bitsandbytes ÷ HF fp32)")
        ax.legend()
        save(fig, "speedup.png")
    return made


# Which published field measures speed, and whether higher is better.
_SPEED_FIELDS = (("latency_s", False), ("inference_s_en", False), ("speed_it_s", True))
_MEMORY_FIELDS = ("memory_mb", "peak_ram_gb", "size_mb")


def _full_precision_of(row: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    cfg = row["config"]
    if "full-precision" in cfg or "quant=False" in cfg:
        return None
    want = cfg.replace("quant=True", "quant=False") if "quant=True" in cfg else "full-precision"
    for r in rows:
        if r["model"] == row["model"] and r["config"] == want:
            return r
    return None


def published_ratios() -> list[list[Any]]:
    """Quantized ÷ full precision within each published study: speed-up and memory ratio."""
    out = []
    for s in published()["studies"]:
        for r in s["rows"]:
            full = _full_precision_of(r, s["rows"])
            if full is None:
                continue
            speed = mem = None
            for f, higher in _SPEED_FIELDS:
                if r.get(f) and full.get(f):
                    speed = r[f] / full[f] if higher else full[f] / r[f]
                    break
            for f in _MEMORY_FIELDS:
                if r.get(f) and full.get(f):
                    mem = r[f] / full[f]
                    break
            out.append([s["hardware"], r["model"], r["config"], f"{speed:.2f}×" if speed else "-",
                        f"{mem:.2f}×" if mem else "-", s["id"]])
    return out


def _ours_ratios(results: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for res in results:
        for v in res["verdicts"]:
            ref = v.get("reference")
            if ref and v["batch"] == 1:
                x = v["vs"][ref]
                rows.append([f"this machine ({res['environment']['cpu']}, CPU)", v["variant"], f"vs {ref}, {v['prompt']}",
                             f"{x['tg']:.2f}× (generation)", f"{x['memory']:.2f}×" if "memory" in x else "-", "edgeq bench"])
    return rows


def _published_section(results: list[dict[str, Any]]) -> str:
    pub = published()
    parts = ["## Beside the published GPU figures (other hardware, other studies)",
             "These rows are copied from earlier studies (sources in `edgeq/data/published-results.json`). "
             "They were measured on GPUs, not on this machine: compare the *ratios*, not the absolute numbers."]
    for s in pub["studies"]:
        rows = s["rows"]
        cols = [k for k in rows[0] if k != "model"]
        parts.append(f"### {s['summary']}\nHardware: {s.get('hardware', '?')}; backend: {s.get('backend', '?')}.")
        parts.append(markdown_table(["model", *cols], [[r["model"], *[r.get(c) for c in cols]] for r in rows]))
        for claim in s.get("claims", []):
            parts.append(f"- Claim: {claim}")
    parts.append("### Quantized ÷ full precision: the published GPU ratios beside this machine's CPU ratios\n"
                 "Speed-up > 1 means the quantized model is faster; memory < 1 means it needs less. "
                 "(gemma-7b's full-precision rows were sharded partly to the CPU, which explains their huge ratio.)")
    parts.append(markdown_table(["hardware", "model", "configuration", "speed-up", "memory", "source"],
                        published_ratios() + _ours_ratios(results)))
    return "\n\n".join(parts)


def _split(paths: list[Path], kind: str) -> tuple[list[Path], list[dict[str, Any]]]:
    """Pull out the results of ``edgeq <kind>`` (they get their own sections); the rest must be bench results."""
    mine = [p for p in paths if schema_of(p).startswith(f"edgeq-{kind}/")]
    return [p for p in paths if p not in mine], [read_results(p, kind) for p in mine]


def _plan_section(plan: dict[str, Any]) -> str:
    d, src = plan["device"], plan["source"]
    rows = [[r["model"], r["quant"], round(r["file_size_bytes"] / 2**20, 1), r["bits_per_weight"],
             round(r["memory"]["total_bytes"] / 2**20), "yes" if r["fits"] else f"no: {r['reason']}", r["tg_tps"],
             r["pp_tps"], r["quality"]["kld"], "eval" if r["quality"]["measured"] else "published"] for r in plan["rows"]]
    rec = plan.get("recommendation") or {}
    return "\n\n".join([
        f"## Plan: {src.get('name') or src['source']} on {d['name']} ({d['description']})",
        f"Context {plan['ctx']} tokens, {plan['cache_type']} KV cache; {plan['budget_bytes'] / 2**30:.2f} GiB usable "
        f"after {plan['headroom_bytes'] / 2**30:.2f} GiB headroom; {d['bandwidth_gbps']} GB/s. "
        "Speeds are predictions (roofline), not measurements.",
        markdown_table(["model", "quant", "size MiB", "bits/weight", f"peak RAM MiB @{plan['ctx']}", "fits", "tg tok/s (pred.)",
                "pp tok/s (pred.)", "KLD", "quality from"], rows),
        *[f"- {n}" for n in plan.get("notes", [])],
        f"**Recommendation:** {rec.get('sentence', 'none')}"])


def report(files: Sequence[str | Path], outdir: str | Path = "report") -> ReportResult:
    """Write ``outdir/report.md`` and its charts from result JSON files of bench, eval, tune and plan; return
    their paths (the library function of `edgeq report`: it reads JSON only, so it runs without torch)."""
    paths, out = [Path(f) for f in files], Path(outdir)
    paths, plans = _split(paths, "plan")
    paths, evals = _split(paths, "eval")
    paths, tunes = _split(paths, "tune")
    results = load_results(paths)
    ensure_folder(out)
    md = ["# edgeq report"]
    made: list[str] = []
    for i, res in enumerate(results):
        env, runs = res["environment"], res["runs"]
        sub = out if len(results) == 1 else out / f"run{i + 1}"
        ensure_folder(sub)
        made += [str((sub / c).relative_to(out)) for c in charts(runs, res["verdicts"], sub)]
        md.append(f"## Run {i + 1}: {env['cpu']}, {env['threads']} threads" + (" (interrupted)" if res.get("interrupted") else ""))
        md.append(markdown_table(["fact", "value"], [
            ["CPU", f"{env['cpu']} ({env['physical_cores']} cores / {env['logical_cores']} threads)"],
            ["features", " ".join(env["cpu_features"])], ["RAM", f"{env['ram_total_bytes'] / 2**30:.1f} GiB"],
            ["OS", env["os"]], ["threads", env["threads"]], ["date", env["date"]],
            *[[k, v] for k, v in env["versions"].items()],
            ["settings", json.dumps(res["settings"])],
            ["read bandwidth", _bandwidth(res)],
            *([["matrix time", f"{res['timing']['matrix_s']} s"]] if (res.get("timing") or {}).get("matrix_s") else [])]))
        md += [f"> **Warning:** {w}" for w in res["roofline"].get("warnings", [])]
        roof = {(r["backend"], r["variant"], r["batch"], r["prompt"]): r["fraction"] for r in res["roofline"].get("rows", [])}
        md.append(markdown_table(["backend", "variant", "batch", "prompt", "status", "load s", "pp tok/s", "tg tok/s",
                          "ms/token", "peak RSS MiB", "bits/weight", "roofline"],
                         [[r["backend"], r["variant"], r["batch"], r["prompt"], r["status"] if r["status"] == "ok"
                           else f"{r['status']}: {r['reason']}", r["load_s"],
                           r["pp_tps"] and r["pp_tps"]["median"], r["tg_tps"] and r["tg_tps"]["median"],
                           r["ms_per_token"], r["peak_rss_bytes"] and round(r["peak_rss_bytes"] / 2**20),
                           r["bits_per_weight"], roof.get((r["backend"], r["variant"], r["batch"], r["prompt"]))]
                          for r in runs]))
        md.append("### Verdict\n" + "\n".join(f"- {v['sentence']}" for v in res["verdicts"]))
        if res.get("llama_bench"):
            md.append("### Cross-check with llama-bench\n" + markdown_table(
                ["variant", "ours pp", "llama-bench pp", "ours tg", "llama-bench tg", "agrees (±10%)"],
                [[c["variant"], c["ours_pp_tps"], c["llama_bench_pp_tps"], c["ours_tg_tps"], c["llama_bench_tg_tps"],
                  "yes" if c["agrees"] else "NO"] for c in res["llama_bench"]]))
        md += [f"![{c}]({c})" for c in made if c.startswith(sub.name if sub != out else "")]
    if evals:
        section, quality_charts = quality_section(results, evals, out)
        md.append(section)
        made += quality_charts
    md += [_plan_section(p) for p in plans]
    for t in tunes:
        section, tune_charts = tune_section(t, out)
        md.append(section)
        made += tune_charts
    if results:
        md.append(_published_section(results))
    path = out / "report.md"
    with atomic_output(path) as tmp:
        tmp.write_text("\n\n".join(md) + "\n", encoding="utf-8")
    return ReportResult(str(path), [str(out / c) for c in made])


def _bandwidth(res: dict[str, Any]) -> str:
    """The ceiling, and the readings it is the best of."""
    bw = res["roofline"].get("bandwidth") or {}
    readings = bw.get("readings_gbps") or []
    more = f" (best of {', '.join(f'{g:g}' for g in readings)})" if len(readings) > 1 else ""
    return f"{bw.get('read_gbps', '?')} GB/s{more}"
