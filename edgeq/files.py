"""Whole-or-nothing file writes, hashing, and reading results JSON back."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from .config import INCOMPLETE_SUFFIX
from .errors import UsageError
from .output import note, to_jsonable

_WRITER = re.compile(r"\.(\d+)-[0-9a-f]+" + re.escape(INCOMPLETE_SUFFIX) + "$")


def incomplete_path(final: Path) -> Path:
    """The temporary name a file is written under until it is whole: ``NAME.<pid>-<tag>.incomplete``.

    Unique to each writer, so two runs writing the same file (two converts into one
    folder, two benches with one ``-o``) never rename or delete each other's.
    """
    return final.with_name(f"{final.name}.{os.getpid()}-{secrets.token_hex(4)}{INCOMPLETE_SUFFIX}")


def final_name(tmp: Path) -> str:
    """The name a temporary file would have had: ``m.gguf`` for ``m.gguf.123-ab12cd34.incomplete``."""
    name = _WRITER.sub("", tmp.name)
    return name[: -len(INCOMPLETE_SUFFIX)] if name.endswith(INCOMPLETE_SUFFIX) else name


def _writer_alive(tmp: Path) -> bool:
    """Whether the process named in a temporary file's name is still the one writing it.

    A pid alone can lie: pids are reused (in a container edgeq is often pid 1 every
    time), so a process that started after the file was last written is not its writer.
    """
    m = _WRITER.search(tmp.name)
    if not m:
        return False  # an older edgeq's name: no writer to ask
    try:
        started = psutil.Process(int(m.group(1))).create_time()
    except (psutil.NoSuchProcess, OverflowError, ValueError):
        return False
    except psutil.Error:
        return True  # someone else's process we may not inspect: leave its file alone
    try:
        return tmp.stat().st_mtime >= started - 1
    except OSError:
        return False


@contextlib.contextmanager
def folder_lock(folder: Path, *, doing: str) -> Iterator[None]:
    """Hold ``folder`` for this run: a second run that writes into it waits (saying so) until the first is done.

    ``flock`` on the folder itself: no lock file to leave behind, and the kernel
    releases it when the process dies, SIGKILL included.
    """
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            note(f"waiting: another edgeq run is writing into {folder}; this one {doing} when it is done")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def missing_file(path: Path, *, noun: str = "file") -> str:
    """Why ``path`` is not a readable regular file, in words: ``does not exist``, ``is a FIFO, not a file`` ..."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return f"is {kind}, not a {noun}"
    return "is not a regular file"


def ensure_folder(path: Path, *, option: str = "-o") -> Path:
    """Create an output folder (and its parents) that this process can write, or raise one clear ``UsageError``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), path)
        raise UsageError(f"cannot make the output folder {path}: {blocker} is a file, not a folder.",
                         hint=f"Pass another {option}.") from None
    except OSError as e:  # PermissionError, a read-only file system, ...
        raise UsageError(f"cannot make the output folder {path}: {e.strerror}.", hint=f"Pass another {option}.") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"the output folder {path} is not writable.", hint=f"Pass another {option}.")
    return path


def check_output_folder(path: Path, *, option: str = "-o") -> None:
    """What ``ensure_folder`` would refuse, found without creating anything: for a verb that must say so
    before it starts minutes of work, and leave nothing behind when it refuses."""
    existing = next((p for p in [path, *path.parents] if p.exists() or p.is_symlink()), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise UsageError(f"cannot make the output folder {path}: {existing} is a file, not a folder.",
                         hint=f"Pass another {option}.")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = f"the output folder {path} is not writable" if existing == path else \
            f"cannot make the output folder {path}: {existing} is not writable"
        raise UsageError(f"{what}.", hint=f"Pass another {option}.")


def link_on_the_way(folder: Path, path: Path) -> Path | None:
    """The first symlink on the way from ``folder`` down to ``path`` (``path`` itself included), or None.

    A file reached through one may be anywhere on the machine: what a verb publishes or copies out of a
    folder must be in the folder itself (``folder`` may be a link: the user named it)."""
    try:
        rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(folder))
    except ValueError:
        return path  # not under the folder at all
    p = Path(folder)
    for part in rel.parts:
        p = p / part
        if p.is_symlink() or part == "..":
            return p
    return None


@contextlib.contextmanager
def staged_folder(dest: Path) -> Iterator[Path]:
    """A hidden folder beside ``dest`` to fill; on success it replaces ``dest`` whole, on failure it is removed,
    so a reader never sees a half-made folder."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        yield tmp
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """Yield a temporary path; rename it to ``final`` only if the block succeeds.

    On any exception (Ctrl-C included) the temporary file is removed, so no
    half-written file ever sits under a final name.
    """
    ensure_folder(final.parent)
    tmp = incomplete_path(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp} was not written")
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def place_file(src: Path, dst: Path) -> None:
    """``dst`` the same bytes as ``src``: a hard link (no second copy of a large file) or, across disks, a copy."""
    if dst.exists() and os.path.samefile(src, dst):
        return
    with atomic_output(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def write_json_atomic(path: Path, data: object) -> None:
    """``data`` as standard JSON (NaN and Inf as null: ``output.to_jsonable``), written whole or not at all."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(to_jsonable(data), indent=2, sort_keys=False, allow_nan=False) + "\n",
                       encoding="utf-8")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def remove_stale_incomplete(folder: Path) -> list[Path]:
    """Delete ``*.incomplete`` files a killed run left behind (their writer is gone); return them."""
    found = sorted(folder.glob("*" + INCOMPLETE_SUFFIX)) if folder.is_dir() else []
    stale = [p for p in found if not _writer_alive(p)]
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
