"""What a MODEL argument names, decided once: ``resolve(arg) -> Source``.

Every verb takes its model through here (``convert``, ``bench``, ``eval``,
``plan``), so a repo id is downloaded once, named once (``safe_name`` of the
repo id) and recorded as ``hub`` with its commit whichever verb sees it first,
and a folder means the same thing to all of them.  The modules beside this
one read what a source holds: ``hub`` (downloads and their errors),
``checkpoint`` (pre-flight of an HF folder, the one safetensors header
reader), ``gguf`` and ``gguf_header`` (GGUF headers), ``embedded`` (the default model) and
``texts`` (the default evaluation and calibration texts).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import GGUFError, SourceError, UsageError
from ..files import missing_file, safe_name
from .embedded import ensure_embedded_model
from .gguf_header import GGUF_MAGIC, magic_of
from .hub import commit_of, download, is_repo_id, repo_id_problem
from .minilm import ALIAS as MINILM_ALIAS
from .minilm import ensure_minilm
from .minilm import fingerprint as minilm_fingerprint

Kind = Literal["embedded", "packaged", "local", "hub", "gguf", "gguf-folder", "adapter"]
# The kinds that hold an HF checkpoint (config.json and weights) rather than GGUF files.
CHECKPOINT_KINDS = ("embedded", "packaged", "local", "hub")
BAD_SOURCE_HINT = ("Pass a .gguf file, a folder of them, an HF checkpoint folder, or a repo id of the form "
                   "owner/name (e.g. HuggingFaceTB/SmolLM2-135M).")


@dataclass(frozen=True)
class Source:
    """A resolved MODEL argument: what it is, where its files are, and what identifies them."""

    kind: Kind
    name: str  # file-name stem for what edgeq makes from it: models/<name>/<name>-Q8_0.gguf
    path: Path | None  # the checkpoint folder, GGUF file or GGUF folder; None for a hub source not downloaded
    fingerprint: str  # repo_id@commit, or the names, sizes and mtimes of the local files
    repo_id: str | None = None
    revision: str | None = None  # for a hub source, the commit sha (never a branch name)
    arg: str | None = None  # what was passed; None means the default, the embedded model

    @property
    def is_checkpoint(self) -> bool:
        return self.kind in CHECKPOINT_KINDS

    def ggufs(self) -> list[Path]:
        """The GGUF files of a ``gguf`` or ``gguf-folder`` source, sorted; [] for a checkpoint or an adapter."""
        if self.path is None or self.is_checkpoint or self.kind == "adapter":
            return []
        # A folder's multimodal projectors (mmproj-*.gguf) are not models: they go with the text model naming them.
        return [self.path] if self.kind == "gguf" else sorted(p for p in self.path.glob("*.gguf")
                                                              if not p.name.startswith("mmproj-"))

    def record(self) -> dict[str, object]:
        """The ``source`` entry of a manifest (its schema: kind, path, fingerprint, and repo_id/revision for hub)."""
        rec: dict[str, object] = {"kind": self.kind}
        if self.kind == "hub":
            rec.update(repo_id=self.repo_id, revision=self.revision)
        rec.update(path=str(self.path), fingerprint=self.fingerprint)
        return rec


def resolve(arg: str | Path | None, *, revision: str | None = None, token: str | None = None,
            endpoint: str | None = None, fetch: bool = True, progress: bool = True) -> Source:
    """Decide what ``arg`` names: a GGUF file, a folder (an HF checkpoint if it has config.json, a PEFT adapter
    if it has adapter_config.json, else GGUFs), a Hub repo id, or (None) the embedded model.

    A repo id is pinned to the commit ``revision`` names now; with ``fetch`` its
    conversion files are downloaded (reusing the HF cache), without it only the
    commit is asked for (``plan`` reads headers by range requests instead).
    """
    if arg is None:
        path = ensure_embedded_model()
        return Source("embedded", safe_name(path.name), path, folder_fingerprint(path))
    text = str(arg)
    p = Path(text).expanduser()
    if text == MINILM_ALIAS and not p.exists():  # the packaged embedding model (a folder of that name wins)
        path = ensure_minilm()
        return Source("packaged", safe_name(path.name), path, minilm_fingerprint(), arg=text)
    if p.is_file():
        if magic_of(p) != GGUF_MAGIC:
            raise GGUFError(f"{p} is not a GGUF file.", hint=BAD_SOURCE_HINT)
        return Source("gguf", gguf_stem(p), p, file_fingerprint(p), arg=text)
    if p.is_dir():
        p = p.resolve()
        if (p / "config.json").is_file():
            return Source("local", safe_name(p.name), p, folder_fingerprint(p), arg=text)
        if (p / "adapter_config.json").is_file():  # a PEFT adapter: a model's --lora, never a model itself
            return Source("adapter", safe_name(p.name), p, folder_fingerprint(p), arg=text)
        if any(p.glob("*.gguf")):
            return Source("gguf-folder", safe_name(p.name), p, folder_fingerprint(p), arg=text)
        raise SourceError(f"{p} has no config.json and no .gguf files: it is neither an HF checkpoint nor GGUFs.",
                          hint="Pass an HF checkpoint folder (config.json, tokenizer, weights) or a folder of GGUFs.")
    if p.suffix == ".gguf" or text.startswith((".", "/", "~")) or not is_repo_id(text):
        what = missing_file(p) if p.suffix == ".gguf" or p.exists() else "is neither a local folder nor a Hugging Face repo id"
        why = repo_id_problem(text) if "/" in text and not text.startswith((".", "/", "~")) else None
        raise UsageError(f"{text!r} {what}" + (f" ({why})" if why and not p.exists() else "") + ".",
                         hint=BAD_SOURCE_HINT)
    return _hub(text, revision=revision, token=token, endpoint=endpoint, fetch=fetch, progress=progress)


def _hub(repo_id: str, *, revision: str | None, token: str | None, endpoint: str | None, fetch: bool,
         progress: bool) -> Source:
    if fetch:
        dl = download(repo_id, revision=revision, token=token, endpoint=endpoint, progress=progress)
        sha, path = dl.revision, Path(dl.path)
    else:
        sha, path = commit_of(repo_id, revision=revision, token=token, endpoint=endpoint), None
    return Source("hub", safe_name(repo_id), path, f"{repo_id}@{sha}", repo_id=repo_id, revision=sha, arg=repo_id)


def gguf_stem(path: Path) -> str:
    """A GGUF's model name from its file name: ``smol-Q8_0.gguf`` → ``smol``."""
    return path.stem.rsplit("-", 1)[0]


def folder_fingerprint(folder: Path) -> str:
    """Cheap identity of a local folder: names, sizes and mtimes of its files."""
    items = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def file_fingerprint(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(json.dumps([path.name, st.st_size, st.st_mtime_ns]).encode()).hexdigest()[:16]


__all__ = ["BAD_SOURCE_HINT", "CHECKPOINT_KINDS", "Kind", "Source", "file_fingerprint", "folder_fingerprint",
           "gguf_stem", "resolve"]
