"""Expected quality of a quant: edgeq's own eval results for this model when there are some,
otherwise llama.cpp's published figures for that quant type (labelled, with their source)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import read_results

PUBLISHED_SOURCE = ("vendor/llama.cpp/tools/perplexity/README.md, 'LLaMA 3 8b Scoreboard' "
                    "(no imatrix; KLD and ΔPPL vs FP16 on Wikitext)")
# (mean KLD, ΔPPL) of Llama-3-8B from the table above; F32 is the reference itself.
PUBLISHED = {
    "F32": (0.0, 0.0), "BF16": (0.000551, 0.001524), "F16": (0.000551, 0.001524),
    "Q8_0": (0.001355, 0.002650), "Q6_K": (0.005452, 0.021748), "Q5_K_M": (0.010762, 0.056974),
    "Q5_K_S": (0.016595, 0.104964), "Q5_1": (0.018045, 0.106223), "Q5_0": (0.022239, 0.131591),
    "Q4_K_M": (0.031273, 0.175482), "Q4_K_S": (0.043136, 0.268895), "Q4_1": (0.071683, 0.451103),
    "Q4_0": (0.071940, 0.468514), "Q3_K_L": (0.087176, 0.556242), "Q3_K_M": (0.101913, 0.656864),
    "Q3_K_S": (0.228217, 1.632152),
}


@dataclass
class Quality:
    kld: float | None  # mean KL divergence vs full precision
    delta_ppl: float | None  # absolute (published) or percent (edgeq eval): see ``delta_ppl_unit``
    delta_ppl_unit: str  # "ppl" | "%"
    source: str  # "edgeq eval: FILE" or the published table
    measured: bool  # True: this model, this machine's eval; False: another model's published figure


def published(quant: str) -> Quality:
    kld, dppl = PUBLISHED.get(quant, (None, None))
    return Quality(kld, dppl, "ppl", f"published for Llama-3-8B: {PUBLISHED_SOURCE}" if kld is not None
                   else "no published figure for this type", False)


def load_eval(paths: list[Path]) -> list[dict[str, Any]]:
    """Rows of edgeq eval results (schema edgeq-eval/…); tolerant of fields it does not know."""
    rows = []
    for p in paths:
        data = read_results(p, "eval")
        for r in data.get("rows") or []:
            if isinstance(r, dict):
                rows.append({**r, "_file": str(p)})
    return rows


def _matches(row: dict[str, Any], model_names: set[str], quant: str) -> bool:
    m = row.get("model") or {}
    name = str(m.get("name", "")).lower() if isinstance(m, dict) else ""
    variant = str(m.get("variant", "")).upper() if isinstance(m, dict) else ""
    return variant == quant.upper() and (not model_names or name in model_names)


def expected(quant: str, model_names: set[str], eval_rows: list[dict[str, Any]]) -> Quality:
    """This model's measured KLD / ΔPPL if an eval row matches, else the published figure."""
    for r in eval_rows:
        if _matches(r, model_names, quant) and (r.get("kld_mean") is not None or r.get("delta_ppl_pct") is not None):
            return Quality(r.get("kld_mean"), r.get("delta_ppl_pct"), "%", f"edgeq eval: {r['_file']}", True)
    return published(quant)
