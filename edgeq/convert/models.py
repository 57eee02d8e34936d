"""GGUFs for the MODEL arguments of ``bench`` and ``eval``: converted first where an argument is an HF source.

Each argument is resolved once (``sources.resolve``); an HF checkpoint or
repo id is converted with that same ``Source`` when types are asked for, so
its files are named and recorded exactly as ``edgeq convert`` names them and
that command's finished outputs are reused rather than made again.
"""
from __future__ import annotations

from pathlib import Path

from .. import config
from ..llamacpp import supported_architectures
from ..output import note
from ..sources import Source, gguf_stem, resolve
from ..sources.checkpoint import architecture, read_config
from ..sources.gguf import read
from .pipeline import convert


def gguf_variant(path: Path) -> str:
    """A GGUF's type label: its file type from the header, else the last part of its name."""
    return read(path).file_type or path.stem.rsplit("-", 1)[-1]


def plan_models(models: list[str], quants: list[str] | None, convert_progress: bool, *, revision: str | None = None,
                token: str | None = None) -> tuple[list[tuple[str, Path, str]], list[tuple[str, Path]]]:
    """Split the arguments into GGUF files (name, path, variant) and HF checkpoints (name, path).

    No argument means the embedded model.  With ``quants``, an HF source is also
    converted (or its finished outputs reused).
    """

    ggufs: list[tuple[str, Path, str]] = []
    checkpoints: list[tuple[str, Path]] = []
    args: list[str | None] = list(models) or [None]
    sources: list[Source] = [resolve(m, revision=revision, token=token, progress=convert_progress) for m in args]
    for src in sources:
        if not src.is_checkpoint:
            ggufs += [(gguf_stem(f), f, gguf_variant(f)) for f in src.ggufs()]
            continue
        assert src.path is not None  # resolve fetches checkpoint sources
        checkpoints.append((src.name, src.path))
        arch = architecture(read_config(src.path))
        if quants and arch not in supported_architectures(config.llama_dir()):
            # The seeds' OPT, GPT-Neo and CodeGen: no GGUF, but transformers still measures them.
            note(f"{src.name} is {arch or 'an unnamed architecture'}, which the vendored converter cannot make a "
                 f"GGUF of: only its transformers variants run.")
            continue
        if quants:
            res = convert(src, quants=quants, progress=convert_progress, token=token)
            wanted = [q.upper() for q in quants]
            ggufs += [(src.name, Path(o.path), o.type) for o in res.outputs if o.type in wanted]
    return ggufs, checkpoints

