"""The MODEL arguments of the embedding verbs: which are sentence-embedding models, their GGUFs, their reference.

An HF checkpoint (or ``minilm``, the packaged model) is converted to the types asked for, as ``edgeq convert``
would, and is itself the reference; a GGUF's reference is the checkpoint its folder's manifest names.  Every
file's head (pooling, normalisation) must be its reference's, or the comparison stops (``require_same_head``).
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import manifest
from ..conversion import convert
from ..errors import EdgeqError, SourceError, UsageError
from ..llamacpp import crash_error, run_worker_once
from ..sources import Source, resolve
from ..sources.gguf import read
from ..sources.gguf_header import GGUF_MAGIC, magic_of, read_header
from ..sources.minilm import ALIAS, ensure_minilm
from ..sources.sentence import EmbeddingHead, checkpoint_head, gguf_head, require_same_head
from .protocol import Request

WORKER_TIMEOUT_S = 3600


@dataclass
class EmbeddingFile:
    label: str  # the GGUF's type (F16, Q8_0, ...)
    path: Path
    head: EmbeddingHead


@dataclass
class EmbeddingModels:
    name: str
    files: list[EmbeddingFile]
    reference: Path | None  # the sentence-transformers checkpoint folder
    head: EmbeddingHead  # the reference's (else the first file's)


def is_embedding_model(arg: str | None) -> bool:
    """Whether a MODEL argument names a sentence-embedding model, read from headers and configs (nothing is
    converted or downloaded): a GGUF with a pooling type, a checkpoint folder whose modules.json pools, ``minilm``."""
    if arg is None:
        return False
    if arg == ALIAS and not Path(arg).exists():
        return True
    p = Path(arg).expanduser()
    try:
        if p.is_file() and magic_of(p) == GGUF_MAGIC:
            return gguf_head(read_header(p).metadata) is not None
        if p.is_dir():
            if (p / "config.json").is_file():
                return checkpoint_head(p) is not None
            return any(gguf_head(read_header(f).metadata) is not None for f in sorted(p.glob("*.gguf"))[:1])
    except EdgeqError:
        return False  # the verb itself then says what is wrong with the file
    return False


def resolve_models(models: list[str], quants: list[str], *, reference: str | None = None, progress: bool = True,
                   revision: str | None = None, token: str | None = None) -> EmbeddingModels:
    """The GGUFs to measure and the checkpoint to measure them against (see the module's docstring)."""
    files: list[EmbeddingFile] = []
    ref: Path | None = Path(reference).expanduser().resolve() if reference else None
    name = ""
    for arg in models:
        src = resolve(arg, revision=revision, token=token, progress=progress)
        name = name or src.name
        if src.is_checkpoint:
            assert src.path is not None  # resolve fetched it
            if checkpoint_head(src.path) is None:
                raise _not_embedding(src)
            ref = ref or src.path
            if quants:
                res = convert(src, quants=quants, progress=progress, token=token)
                files += [_file(Path(o.path)) for o in res.outputs if o.type in quants]
            continue
        for f in src.ggufs():
            files.append(_file(f))
            ref = ref or _manifest_source(f)
    if not files and not ref:
        raise UsageError("no model to measure.", hint="Pass a sentence-embedding checkpoint, `minilm` or its GGUFs.")
    ref_head = checkpoint_head(ref) if ref else None
    if ref is not None and ref_head is None:
        raise SourceError(f"{ref} has no sentence-transformers pooling (modules.json, 1_Pooling/).",
                          hint="Pass --reference with the sentence-transformers checkpoint the files were made from.")
    for ef in files:
        require_same_head(ef.path.name, ef.head, ref_head or files[0].head)
    head = ref_head or files[0].head
    return EmbeddingModels(name or "embeddings", files, ref, head)


def _file(path: Path) -> EmbeddingFile:
    info = read(path)
    if info.embedding is None:
        raise SourceError(f"{path.name} ({info.architecture}) declares no pooling: it is not a sentence-embedding "
                          "model.", hint="Pass GGUFs converted from a sentence-transformers checkpoint.")
    return EmbeddingFile(info.file_type or path.stem.rsplit("-", 1)[-1], path, info.embedding)


def _manifest_source(gguf: Path) -> Path | None:
    """The checkpoint a GGUF's folder was converted from, if it is still there (the packaged model: extracted
    again where it now lives)."""
    mf = manifest.load(gguf.parent)
    if mf and mf.source.get("kind") == "packaged":
        return ensure_minilm()
    p = Path(str(mf.source.get("path"))) if mf and mf.source.get("path") else None
    return p if p and (p / "modules.json").is_file() else None


def _not_embedding(src: Source) -> SourceError:
    return SourceError(f"{src.name} has no sentence-transformers pooling (modules.json naming a Pooling module): "
                       "it is not a sentence-embedding model.",
                       hint="Pass a sentence-transformers checkpoint, or use `edgeq eval ppl` for a generator.")


def ask_worker(req: Request, doing: str) -> dict[str, Any]:
    """Run one embedder request in its own process; its failure becomes one line naming ``doing``."""
    try:
        rc, out, tail = run_worker_once("edgeq.embeddings.worker", json.dumps(asdict(req)), timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise EdgeqError(f"{req.backend} took over {WORKER_TIMEOUT_S} s {doing}.",
                         hint="Pass fewer texts or a smaller model.") from None
    lines = [ln for ln in out.splitlines() if ln.strip()]
    if rc != 0 or not lines:
        raise crash_error(rc, doing, tail=tail, engine=req.backend) or EdgeqError(
            f"{req.backend} stopped {doing} (exit {rc}): {tail[-1] if tail else 'no output'}")
    reply: dict[str, Any] = json.loads(lines[-1])
    if "error" in reply:
        raise EdgeqError(f"{req.backend} failed {doing} ({Path(req.path).name}, {req.variant}): {reply['error']}",
                         hint="Check the file with `edgeq inspect`; `edgeq doctor` checks the build.")
    return reply


__all__ = ["EmbeddingFile", "EmbeddingModels", "ask_worker", "is_embedding_model", "resolve_models"]
