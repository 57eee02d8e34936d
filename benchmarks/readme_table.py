"""The one way benchmark scripts publish a table: ``benchmarks/results/<name>.md`` and the README between its
``<!-- <name>:begin -->`` / ``<!-- <name>:end -->`` markers (left alone when the README has none)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def publish(name: str, table: str) -> None:
    (ROOT / "benchmarks" / "results" / f"{name}.md").write_text(table + "\n")
    readme = ROOT / "README.md"
    text = readme.read_text()
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin in text and end in text:
        a, b = text.index(begin) + len(begin), text.index(end)
        readme.write_text(text[:a] + "\n" + table + "\n" + text[b:])
    print(table)
