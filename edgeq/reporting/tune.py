"""The report's section for ``edgeq tune`` results: the verification table and KLD against size, tuned rows marked."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .quality import fmt, save_kld_chart
from .tables import markdown_table


def tune_section(res: dict[str, Any], outdir: Path) -> tuple[str, list[str]]:
    """Markdown for one tune result, and the chart files it made."""
    name = Path(res["output"]).name
    rows = sorted(res["rows"], key=lambda r: r["size_bytes"])
    parts = [f"## Tune: {name}",
             f"Budget: {res['budget']['kind']} {res['budget']['asked']} ({res['budget']['bytes']:,} bytes); "
             f"errors weighted by {res['calibration'].get('weighting', 'imatrix')}; predicted KLD "
             f"{res['predicted_kld']:.4g}, measured {fmt(res['measured_kld'], '.4g')}.",
             markdown_table(["file", "size MiB", "bits/weight", "mean KLD", "ΔPPL %", "top-1 %", "predicted KLD"],
                            [[("**tuned**" if r["tuned"] else r["label"]), fmt(r["size_bytes"] / 2**20, ".1f"),
                              fmt(r["bits_per_weight"], ".2f"), fmt(r["kld_mean"], ".4g"),
                              fmt(r["delta_ppl_pct"], "+.2f"), fmt(r["top1_pct"], ".1f"),
                              fmt(r["predicted_kld"], ".4g")] for r in rows]),
             f"**Verdict:** {res['verdict']}",
             "Type shares: " + ", ".join(f"{k} {v:.1%}" for k, v in res["type_shares"].items()),
             f"Replay: `{res['replay']}`"]
    chart = _chart(name, rows, outdir)
    if chart:
        parts.append(f"![{chart}]({chart})")
    return "\n\n".join(parts), [chart] if chart else []


def _chart(name: str, rows: list[dict[str, Any]], outdir: Path) -> str | None:
    pts = [r for r in rows if r.get("kld_mean")]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    stock = [r for r in pts if not r["tuned"]]
    ax.plot([r["size_bytes"] / 2**20 for r in stock], [r["kld_mean"] for r in stock], "o-", color="tab:blue",
            label="stock recipes (same imatrix)")
    for r in pts:
        ax.annotate(r["label"], (r["size_bytes"] / 2**20, r["kld_mean"]), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    tuned = [r for r in pts if r["tuned"]]
    ax.scatter([r["size_bytes"] / 2**20 for r in tuned], [r["kld_mean"] for r in tuned], marker="*", s=160,
               color="tab:red", zorder=3, label="tuned (measured)")
    pred = [r for r in tuned if r.get("predicted_kld")]
    ax.scatter([r["size_bytes"] / 2**20 for r in pred], [r["predicted_kld"] for r in pred], marker="x", s=60,
               color="tab:red", zorder=3, label="tuned (predicted)")
    ax.legend(fontsize=8)
    return save_kld_chart(fig, ax, f"{name}: KLD vs size", "mean KL-divergence to F16 (nats)",
                          outdir / f"tune-kld-vs-size-{re.sub(r'[^A-Za-z0-9._-]+', '-', Path(name).stem)}.png")
