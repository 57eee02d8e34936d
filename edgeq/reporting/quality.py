"""The report's joined section: per model, speed (bench) and quality (eval) side by side, and KLD vs size."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..files import atomic_output
from .tables import first_prompt_batch1, markdown_table


def _key(backend: str, path: str, variant: str) -> tuple[str, str, str]:
    # Results are written from different working directories: match on the file or folder name;
    # every transformers variant (fp32, bf16, bnb-*) runs from the same folder.
    return backend, Path(path).name, variant if backend == "transformers" else ""


def joined_rows(benches: list[dict[str, Any]], evals: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """One row per model variant, per model: size, bits/weight, tok/s, peak RAM, PPL, KLD, accuracy."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}

    def row(model: str, backend: str, variant: str, path: str) -> dict[str, Any]:
        return rows.setdefault(_key(backend, path, variant), {"model": model, "backend": backend, "variant": variant})

    for res in evals:
        for r in res["rows"]:
            m = r["model"]
            out = row(m["name"], m["backend"], m["variant"], m["path"])
            out.update({k: v for k, v in {"size_bytes": m.get("size_bytes"), "bits_per_weight": m.get("bits_per_weight")}.items() if v})
            keys = ("ppl", "ppl_stderr", "delta_ppl_pct", "kld_mean", "kld_p99", "top1_pct") if res["task"] == "ppl" \
                else ("acc", "acc_norm")
            out.update({k: r.get(k) for k in keys})
    for res in benches:
        for r in first_prompt_batch1(res["runs"]):
            out = row(r["model"], r["backend"], r["variant"], r["path"])
            out.setdefault("size_bytes", r.get("file_size_bytes"))
            out.setdefault("bits_per_weight", r.get("bits_per_weight"))
            out.update(tg_tps=r["tg_tps"] and r["tg_tps"]["median"], pp_tps=r["pp_tps"] and r["pp_tps"]["median"],
                       peak_rss_bytes=r.get("peak_rss_bytes"))
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in rows.values():
        by_model.setdefault(r["model"], []).append(r)
    return by_model


def fmt(x: Any, spec: str) -> Any:
    """``x`` formatted, or empty when it is missing."""
    return "" if x is None else format(x, spec)


def quality_section(benches: list[dict[str, Any]], evals: list[dict[str, Any]], outdir: Path) -> tuple[str, list[str]]:
    parts, made = ["## Quality and speed, joined"], []
    for model, rows in joined_rows(benches, evals).items():
        rows.sort(key=lambda r: -(r.get("size_bytes") or 0))
        parts.append(f"### {model}")
        parts.append(markdown_table(
            ["variant", "size MiB", "bits/weight", "tg tok/s", "pp tok/s", "peak RSS MiB", "PPL", "ΔPPL %", "mean KLD",
             "KLD p99", "top-1 %", "acc %", "acc_norm %"],
            [[("HF " if r["backend"] == "transformers" else "") + r["variant"],
              fmt(r.get("size_bytes") and r["size_bytes"] / 2**20, ".1f"), fmt(r.get("bits_per_weight"), ".2f"),
              fmt(r.get("tg_tps"), ".1f"), fmt(r.get("pp_tps"), ".1f"),
              fmt(r.get("peak_rss_bytes") and r["peak_rss_bytes"] / 2**20, ".0f"), fmt(r.get("ppl"), ".3f"),
              fmt(r.get("delta_ppl_pct"), "+.2f"), fmt(r.get("kld_mean"), ".3g"), fmt(r.get("kld_p99"), ".3g"),
              fmt(r.get("top1_pct"), ".1f"), fmt(r.get("acc"), ".1f"), fmt(r.get("acc_norm"), ".1f")] for r in rows]))
        chart = _quality_chart(model, rows, outdir)
        if chart:
            made.append(chart)
            parts.append(f"![{chart}]({chart})")
    for res in evals:
        d = res["data"]
        parts.append(f"- {res['task']}: {d['source']}" + (f"; {d['windows']} windows of {d['ctx']} tokens"
                                                          if res["task"] == "ppl" else f"; {d['items']} items")
                     + "".join(f"; {'✓' if c['ok'] else '✗'} {c['detail']}" for c in res.get("checks", [])))
    return "\n\n".join(parts), made


def _quality_chart(model: str, rows: list[dict[str, Any]], outdir: Path) -> str | None:
    """KL-divergence (log scale) against file size: the cost of each MiB saved."""
    pts = [r for r in rows if r.get("kld_mean") and r.get("size_bytes")]
    if len(pts) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in pts:
        ax.scatter(r["size_bytes"] / 2**20, r["kld_mean"], color="tab:blue")
        ax.annotate(r["variant"], (r["size_bytes"] / 2**20, r["kld_mean"]), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    return save_kld_chart(fig, ax, f"{model}: quality vs size", "mean KL-divergence to full precision (nats)",
                          outdir / f"quality-vs-size-{re.sub(r'[^A-Za-z0-9._-]+', '-', model)}.png")


def save_kld_chart(fig: Any, ax: Any, title: str, ylabel: str, path: Path) -> str:
    """Finish a KLD-against-size chart (log KLD, grid) and write it whole; return its file name."""
    import matplotlib.pyplot as plt

    ax.set_yscale("log")
    ax.set_xlabel("file size (MiB)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path.name
