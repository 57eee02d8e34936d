"""Whole-or-nothing file writes, hashing, and reading results JSON back."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import INCOMPLETE_SUFFIX
from .errors import UsageError


def incomplete_path(final: Path) -> Path:
    """The temporary name a file is written under until it is whole."""
    return final.with_name(final.name + INCOMPLETE_SUFFIX)


@contextlib.contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """Yield a temporary path; rename it to ``final`` only if the block succeeds.

    On any exception (Ctrl-C included) the temporary file is removed, so no
    half-written file ever sits under a final name.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = incomplete_path(final)
    tmp.unlink(missing_ok=True)  # left by a run that was killed (SIGKILL)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp} was not written")
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: object) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def remove_stale_incomplete(folder: Path) -> list[Path]:
    """Delete ``*.incomplete`` files a killed run left behind; return them."""
    stale = sorted(folder.glob("*" + INCOMPLETE_SUFFIX)) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def read_results(path: Path, kind: str) -> dict[str, Any]:
    """A results JSON written by ``edgeq <kind>`` (schema ``edgeq-<kind>/N``), or one clear error."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read {kind} results {path}: {e}.",
                         hint=f"Pass a JSON file written by `edgeq {kind}`.") from e
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith(f"edgeq-{kind}/"):
        raise UsageError(f"{path} is not an edgeq {kind} result (no 'schema': 'edgeq-{kind}/…').",
                         hint=f"Pass a JSON file written by `edgeq {kind}`.")
    return data


def schema_of(path: Path) -> str:
    """The ``schema`` field of a JSON file, or '' when it has none or cannot be read."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return str(data.get("schema", "")) if isinstance(data, dict) else ""


def safe_name(text: str) -> str:
    """A file-name stem from a repo id or folder: no separators, no leading dots."""
    stem = text.rstrip("/").split("/")[-1]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip(".-")
    if not stem:
        raise UsageError(f"cannot make a file name from {text!r}.", hint="Pass --name NAME.")
    return stem
