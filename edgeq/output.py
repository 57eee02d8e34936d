"""Rendering for people (tables, progress on stderr) and for scripts (JSON on stdout)."""
from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from typing import Any

import click

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides that reorder text.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: object) -> str:
    """``text`` safe for a terminal: every control character shown as ``\\xNN`` (``\\u202e``...) instead of obeyed.

    Names, templates and paths come from files anyone can write; an ``ESC[2J`` in a
    GGUF's ``general.name`` must not clear the screen of whoever inspects it.
    """
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                            else f"\\u{ord(m.group()):04x}", str(text))


def one_line(text: object) -> str:
    """``printable`` and on one line: newline and tab shown as ``\\n`` and ``\\t``.

    For text put into a file's structure (a Markdown card, a shell script's comment), where a line break
    taken from a file name or a GGUF's metadata would start a heading or a command of its own."""
    return printable(text).replace("\n", "\\n").replace("\t", "\\t")


# Characters that have a meaning in Markdown or HTML wherever they stand (links, emphasis, code, tags,
# entities, headings, tables); backslash-escaped, they are shown as themselves (CommonMark: any ASCII
# punctuation may be escaped).
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#!|~&])")


def md_text(text: object) -> str:
    """``text`` as literal Markdown: one line, every character that could open markup escaped."""
    return _MD_SPECIAL.sub(r"\\\1", one_line(text))


def md_code(text: object) -> str:
    """``text`` as one Markdown code span, whatever backticks it holds (the fence is one longer than its
    longest run of them); HTML and emphasis inside a code span are shown, never rendered."""
    s = one_line(text)
    fence = "`" * (max((len(r) for r in re.findall(r"`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def echo(text: object = "", *, err: bool = False) -> None:
    """A line for people, made ``printable``."""
    click.echo(printable(text), err=err)


def to_jsonable(obj: Any) -> Any:
    """Plain JSON values; NaN and ±Inf become null (JSON has no such numbers, and a result that holds one is
    unreadable to strict parsers)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "__fspath__"):
        return str(obj)
    return obj


def print_json(obj: Any) -> None:
    click.echo(json.dumps(to_jsonable(obj), indent=2, default=str, allow_nan=False))


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def print_table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    """A plain table on stdout (rich when installed, aligned text otherwise)."""
    try:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text
    except ImportError:  # pragma: no cover
        widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]
        if title:
            echo(title)
        for r in [columns, *rows]:
            echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
        return
    # Text, not str: rich would read "[...]" in a file's metadata as its own markup.
    table = Table(title=Text(printable(title)) if title else None, title_justify="left")
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*(Text(printable(v)) for v in r))
    # A terminal's own width; when piped, wide enough that file names don't wrap.
    width = Console().width if sys.stdout.isatty() else 200
    Console(file=sys.stdout, soft_wrap=False, width=width).print(table)


def note(message: str) -> None:
    """A line for people: stderr, so stdout stays clean for pipes and --json."""
    echo(message, err=True)


class Progress:
    """A tqdm bar on stderr, or nothing when progress is off (``--json``, ``--quiet``, no TTY)."""

    def __init__(self, desc: str, total: int | None, enabled: bool, *, unit: str = "tensor",
                 own_eta: bool = False) -> None:
        """``own_eta``: the caller says the time left with ``say`` (its steps differ in length)."""
        self._bar = None
        if enabled:
            from tqdm import tqdm

            fmt = f"{{desc}}: {{n_fmt}}/{{total_fmt}} {unit}s [{{elapsed}}] {{postfix}}" if own_eta else None
            self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=True,
                             dynamic_ncols=True, bar_format=fmt)

    def say(self, text: str) -> None:
        """Text beside the bar (what runs now, time left); tqdm's own ETA assumes equal steps."""
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=True)

    def update_to(self, done: int, total: int | None = None) -> None:
        if self._bar is not None:
            if total and self._bar.total != total:
                self._bar.total = total
            self._bar.n = done
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
