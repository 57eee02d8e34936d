"""Small pieces the report's sections share: which runs to show, and Markdown tables."""
from __future__ import annotations

import re
from typing import Any

from ..output import one_line


def label(r: dict[str, Any]) -> str:
    return f"{r['variant']}" if r["backend"] == "llama.cpp" else f"HF {r['variant']}"


def first_prompt_batch1(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The finished runs of the first prompt at the smallest batch: one row per variant."""
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        return []
    prompt = ok[0]["prompt"]
    batch = min(r["batch"] for r in ok)
    return [r for r in ok if r["prompt"] == prompt and r["batch"] == batch]


def cell(v: object) -> str:
    """A table cell that stays one cell: on one line, its pipes escaped (GFM reads ``\\|`` as a pipe even
    inside a code span), so a model's or a file's name cannot add a column or a row."""
    return re.sub(r"(?<!\\)\|", r"\\|", one_line("" if v is None else v))


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
