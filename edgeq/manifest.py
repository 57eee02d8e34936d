"""The manifest of a conversion folder: where files came from and their sha256.

A deployment script runs ``verify`` before it ships a folder.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ._version import __version__
from .config import MANIFEST_NAME
from .errors import SourceError
from .files import sha256_file, write_json_atomic

SCHEMA = 1


@dataclass
class FileRecord:
    type: str
    sha256: str
    size_bytes: int
    bits_per_weight: float
    recipe: str  # fingerprint of source + options: equal recipe means up to date
    created: str


@dataclass
class Manifest:
    source: dict[str, object]
    llama_cpp: str
    options: dict[str, object]
    files: dict[str, FileRecord] = field(default_factory=dict)
    edgeq_version: str = __version__
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def manifest_path(outdir: Path) -> Path:
    return outdir / MANIFEST_NAME


def load(outdir: Path) -> Manifest | None:
    """Read a folder's manifest; None if there is none, an error if it is damaged."""
    path = manifest_path(outdir)
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or not isinstance(raw.get("files", {}), dict):
            raise ValueError("not a manifest object")
        files = {k: FileRecord(**v) for k, v in raw.get("files", {}).items()}
        for name in files:
            if not _plain_name(name):
                raise ValueError(f"file name {name!r} is not a plain name inside the folder")
        return Manifest(source=raw["source"], llama_cpp=raw["llama_cpp"], options=raw.get("options", {}),
                        files=files, edgeq_version=raw.get("edgeq_version", "?"), schema=raw.get("schema", 0))
    except (ValueError, KeyError, TypeError) as e:  # UnicodeDecodeError is a ValueError
        raise SourceError(f"{path} is damaged ({type(e).__name__}: {e}).",
                          hint="Delete it and rerun with --force to rebuild the folder.") from e


def _plain_name(name: str) -> bool:
    """A manifest may only name files directly in its folder: verify and reuse never look elsewhere."""
    return name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


def save(outdir: Path, manifest: Manifest) -> Path:
    path = manifest_path(outdir)
    write_json_atomic(path, manifest.to_dict())
    return path


def record(path: Path, qtype: str, bits_per_weight: float, recipe: str, *, sha256: str | None = None) -> FileRecord:
    """The manifest entry of a finished file (``sha256``: its digest when already computed)."""
    return FileRecord(type=qtype, sha256=sha256 or sha256_file(path), size_bytes=path.stat().st_size,
                      bits_per_weight=bits_per_weight, recipe=recipe,
                      created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def is_current(outdir: Path, manifest: Manifest | None, name: str, recipe: str) -> bool:
    """True when ``name`` exists, was made from the same recipe, and its size matches.

    Size, not sha256, keeps reuse instant on multi-GB files; ``verify`` does the full check.
    """
    if manifest is None or name not in manifest.files:
        return False
    rec, path = manifest.files[name], outdir / name
    return rec.recipe == recipe and path.is_file() and path.stat().st_size == rec.size_bytes


@dataclass
class VerifyResult:
    folder: str
    ok: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.mismatched and not self.missing


def verify(outdir: str | Path) -> VerifyResult:
    """Re-hash every file the manifest lists."""
    folder = Path(outdir)
    m = load(folder)
    if m is None:
        raise SourceError(f"no {MANIFEST_NAME} in {folder}.", hint="Point at a folder made by `edgeq convert`.")
    result = VerifyResult(str(folder))
    for name, rec in m.files.items():
        path = folder / name
        if not path.is_file():
            result.missing.append(name)
        elif sha256_file(path) != rec.sha256:
            result.mismatched.append(name)
        else:
            result.ok.append(name)
    return result
