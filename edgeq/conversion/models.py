"""GGUFs for the MODEL arguments of ``bench`` and ``eval``: converted first where an argument is an HF source.

Each argument is resolved once (``sources.resolve``); an HF checkpoint or
repo id is converted with that same ``Source`` when types are asked for, so
its files are named and recorded exactly as ``edgeq convert`` names them and
that command's finished outputs are reused rather than made again.
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import config
from ..errors import SourceError, UsageError
from ..llamacpp import supported_architectures
from ..llamacpp.converter import gguf_arch_of
from ..output import note
from ..sources import Source, gguf_stem, resolve
from ..sources.adapter import require_adapter_for
from ..sources.checkpoint import architecture, read_config
from ..sources.gguf import GENERATOR_HINT, not_a_generator, read, require_generator
from .adapters import refuse_adapter_as_model
from .pipeline import convert


def gguf_variant(path: Path) -> str:
    """A GGUF's type label: its file type from the header, else the last part of its name."""
    return read(path).file_type or path.stem.rsplit("-", 1)[-1]


def require_generator_source(src: Source, doing: str) -> None:
    """Refuse a model that cannot generate text before anything runs: a GGUF by its header, a checkpoint by
    the GGUF architecture the vendored converter would give it (and its config's ``is_causal``, and a
    sentence-transformers pooling layer), by the one rule of ``sources.gguf.not_a_generator``."""
    if not src.is_checkpoint:
        for f in src.ggufs():
            require_generator(f, doing)
        return
    if src.path is None:
        return
    cfg = read_config(src.path)
    hf_arch = architecture(cfg)
    arch = gguf_arch_of(hf_arch, config.llama_dir()) or ""
    would: dict[str, object] = {}
    if cfg.get("is_causal") is False:
        would[f"{arch}.attention.causal"] = False
    if _pools(src.path):
        would[f"{arch}.pooling_type"] = 1
    if (why := not_a_generator(arch, would)) is not None:
        raise SourceError(f"{src.name} ({hf_arch}) is {why}; {doing}.", hint=GENERATOR_HINT)


def _pools(folder: Path) -> bool:
    """A sentence-transformers checkpoint: modules.json names a Pooling module (the converter then writes a
    pooling type, as it does for BERT)."""
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(modules, list) and any(isinstance(m, dict) and str(m.get("type", "")).endswith("Pooling")
                                             for m in modules)


def lora_for(lora: str | Path, ggufs: list[tuple[str, Path, str]], checkpoints: list[tuple[str, Path]], *,
             hint: str = "Pass --hf '' to run only its GGUFs, or pass GGUF files.") -> Path:
    """bench's and eval's ``--lora``: an adapter GGUF that fits every GGUF to run; refused beside a checkpoint
    that transformers would run without it (its rows would compare the adapted model with the bare one)."""
    if checkpoints:
        raise UsageError(f"--lora applies to GGUF runs, and {checkpoints[0][0]} would also run in transformers "
                         "without the adapter.", hint=hint)
    return require_adapter_for(lora, [p for _, p, _ in ggufs])


def plan_models(models: list[str], quants: list[str] | None, convert_progress: bool, *, revision: str | None = None,
                token: str | None = None,
                doing: str = "edgeq measures text generation") -> tuple[list[tuple[str, Path, str]], list[tuple[str, Path]]]:
    """Split the arguments into GGUF files (name, path, variant) and HF checkpoints (name, path).

    No argument means the embedded model.  With ``quants``, an HF source is also
    converted (or its finished outputs reused).  A model that cannot generate text (an encoder) is refused
    first, naming ``doing``.
    """

    ggufs: list[tuple[str, Path, str]] = []
    checkpoints: list[tuple[str, Path]] = []
    args: list[str | None] = list(models) or [None]
    sources: list[Source] = [resolve(m, revision=revision, token=token, progress=convert_progress) for m in args]
    for src in sources:
        refuse_adapter_as_model(src)
        require_generator_source(src, doing)
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

