"""The one way benchmark scripts publish a table: ``benchmarks/results/<name>.md`` and the documentation page
that holds the ``<!-- <name>:begin -->`` / ``<!-- <name>:end -->`` markers (a page under ``docs/``; the README
keeps no measured table)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def page_with(name: str) -> Path | None:
    """The docs page holding ``name``'s markers, if one does."""
    begin = f"<!-- {name}:begin -->"
    return next((p for p in sorted(DOCS.rglob("*.md")) if begin in p.read_text(encoding="utf-8")), None)


def write_between_markers(name: str, table: str) -> Path | None:
    """Put ``table`` between ``name``'s markers in its docs page; the page, or None when no page has them."""
    page = page_with(name)
    if page is not None:
        text = page.read_text(encoding="utf-8")
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        a, b = text.index(begin) + len(begin), text.index(end)
        page.write_text(text[:a] + "\n" + table + "\n" + text[b:], encoding="utf-8")
    return page


def publish(name: str, table: str) -> None:
    (ROOT / "benchmarks" / "results" / f"{name}.md").write_text(table + "\n")
    write_between_markers(name, table)
    print(table)
