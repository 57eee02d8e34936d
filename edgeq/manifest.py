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
from .errors import SourceError, UsageError
from .files import sha256_file, write_json_atomic
from .output import note

SCHEMA = 1


@dataclass
class FileRecord:
    type: str
    sha256: str
    size_bytes: int
    bits_per_weight: float
    recipe: str  # fingerprint of source + options: equal recipe means up to date
    created: str
    mtime_ns: int | None = None  # the file's mtime when recorded: reuse re-hashes a file whose mtime moved
    # A vision-language model is two files: the text model, which names its projector here, and the projector
    # (role "projector", the converter's --mmproj output), which every verb that moves the model moves with it.
    role: str = "model"
    projector: str | None = None


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


def with_projector(mf: Manifest, name: str) -> dict[str, FileRecord]:
    """The records of ``name`` and of the projector it names (a vision-language model's pair): what a verb that
    moves the model (ship, bundle) records beside it."""
    out = {name: mf.files[name]}
    proj = mf.files[name].projector
    if proj and proj in mf.files:
        out[proj] = mf.files[proj]
    return out


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
    st = path.stat()
    return FileRecord(type=qtype, sha256=sha256 or sha256_file(path), size_bytes=st.st_size,
                      bits_per_weight=bits_per_weight, recipe=recipe,
                      created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), mtime_ns=st.st_mtime_ns)


def is_current(outdir: Path, manifest: Manifest | None, name: str, recipe: str) -> bool:
    """True when ``name`` is a regular file made from the same recipe, of the recorded size, and unchanged.

    Unchanged: the mtime recorded with it, which keeps reuse instant on multi-GB
    files; a file whose mtime moved (or an entry from before mtimes were recorded)
    is re-hashed against its sha256 instead, so a changed file is never reused.
    """
    if manifest is None or name not in manifest.files:
        return False
    rec, path = manifest.files[name], outdir / name
    if rec.recipe != recipe or path.is_symlink() or not path.is_file():
        return False
    st = path.stat()
    if st.st_size != rec.size_bytes:
        return False
    if rec.mtime_ns is not None and st.st_mtime_ns == rec.mtime_ns:
        return True
    if sha256_file(path) != rec.sha256:
        return False
    rec.mtime_ns = st.st_mtime_ns  # the same bytes, touched: no need to hash it again next time
    return True


@dataclass
class VerifyResult:
    folder: str
    ok: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)  # symlinks: a copy (rsync -a) would ship the link, not the file

    @property
    def passed(self) -> bool:
        return not self.mismatched and not self.missing and not self.linked


def verify(outdir: str | Path) -> VerifyResult:
    """Re-hash every file the manifest lists (a bundle's binaries under ``bin/`` too)."""
    folder = Path(outdir)
    m = load(folder)
    if m is None:
        raise SourceError(f"no {MANIFEST_NAME} in {folder}.", hint="Point at a folder made by `edgeq convert`.")
    result = VerifyResult(str(folder))
    expected = {name: rec.sha256 for name, rec in m.files.items()}
    # A bundle's binaries (``edgeq bundle``): bin/<name>, recorded beside the model.
    bins = m.options.get("bundle")
    if isinstance(bins, dict) and isinstance(bins.get("files"), dict):
        expected |= {f"bin/{name}": str(digest) for name, digest in bins["files"].items() if _plain_name(name)}
    for name, digest in expected.items():
        path = folder / name
        if path.is_symlink():
            result.linked.append(name)
        elif not path.is_file():
            result.missing.append(name)
        elif sha256_file(path) != digest:
            result.mismatched.append(name)
        else:
            result.ok.append(name)
    return result


def kind_of(mf: Manifest) -> str:
    """What made a folder: ``ship`` (a deploy folder), ``bundle``, ``tune`` or ``convert``."""
    for kind in ("ship", "bundle", "tuned"):
        if kind in mf.options:
            return "tune" if kind == "tuned" else kind
    return "convert"


def claim(folder: Path, kind: str, *, force: bool, option: str = "-o") -> Manifest | None:
    """The manifest of ``folder`` if a verb that keeps one model in it (``kind``: ship, bundle) may write
    there; refused otherwise, before any work starts.

    Such a verb replaces what an earlier run of its own kind left (``remove_replaced``).  A folder of another
    kind (a convert folder's quants), or one holding files no manifest records, is someone's work: refused,
    unless ``force`` (the user said so)."""
    if not folder.is_dir():
        return None
    old = load(folder)
    if old is not None and kind_of(old) == kind:
        return old
    entries = sorted(p.name for p in folder.iterdir())
    if not entries or force:
        return old
    if old is not None:
        what = (f"an edgeq {kind_of(old)} folder ({len(old.files)} file(s): {', '.join(list(old.files)[:4])}"
                f"{', …' if len(old.files) > 4 else ''})")
    else:
        what = f"a folder of other files ({', '.join(entries[:4])}{', …' if len(entries) > 4 else ''})"
    raise UsageError(f"{folder} is {what}; edgeq {kind} keeps one model in its folder and would remove or "
                     f"overwrite them.", hint=f"Pass another {option} (an empty or new folder), or --force to "
                                              "replace them.")


def remove_replaced(folder: Path, old: Manifest | None, keep: str, *, force: bool) -> list[str]:
    """Remove the files ``old`` records other than ``keep`` (an earlier run's model); return their names.

    Only files still as edgeq wrote them (size and sha256 as recorded) go; a file changed since is the user's
    and stays (said on stderr), unless ``force``."""
    removed = []
    for name, rec in (old.files if old else {}).items():
        path = folder / name
        if name == keep or not (path.is_file() or path.is_symlink()):
            continue
        if force or path.is_symlink() or (path.stat().st_size == rec.size_bytes and sha256_file(path) == rec.sha256):
            path.unlink()
            removed.append(name)
        else:
            note(f"left {path}: it changed after edgeq wrote it, so it is yours now (no longer in the manifest)")
    return removed
