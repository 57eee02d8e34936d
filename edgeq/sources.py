"""What MODEL arguments name: GGUF files, folders of them, HF checkpoints or repo ids.

Shared by ``bench`` and ``eval``: an HF source is downloaded and, when types are
asked for, converted first (finished outputs are reused), so every verb that
takes MODELS accepts the same things.
"""
from __future__ import annotations

from pathlib import Path

from .download import download, is_repo_id
from .errors import GGUFError, UsageError
from .files import safe_name


def _is_checkpoint(p: Path) -> bool:
    return (p / "config.json").is_file()


def gguf_variant(path: Path) -> str:
    from .gguf_info import read

    info = read(path)
    return info.file_type or path.stem.rsplit("-", 1)[-1]


def plan_models(models: list[str], quants: list[str] | None, convert_progress: bool, *, revision: str | None = None,
                token: str | None = None) -> tuple[list[tuple[str, Path, str]], list[tuple[str, Path]]]:
    """Split the arguments into GGUF files (name, path, variant) and HF checkpoints (name, path).

    With ``quants``, an HF source is also converted (or its finished outputs reused).
    A repo id is converted *as the repo id* (pinned to the commit just downloaded),
    so the files are named and recorded exactly as ``edgeq convert ORG/NAME`` names
    them, and that command's outputs are reused.
    """
    if not models:  # no argument means the embedded model, for every verb that takes MODELS
        from .embedded import ensure_embedded_model

        models = [str(ensure_embedded_model())]
    ggufs: list[tuple[str, Path, str]] = []
    checkpoints: list[tuple[str, Path]] = []
    for m in models:
        p = Path(m).expanduser()
        if p.is_file():
            with open(p, "rb") as f:
                magic = f.read(4)
            if p.suffix != ".gguf" and magic != b"GGUF":
                raise GGUFError(f"{p} is not a GGUF file.", hint="Pass .gguf files, a folder of them, or an HF checkpoint.")
            ggufs.append((p.stem.rsplit("-", 1)[0], p, gguf_variant(p)))
        elif p.is_dir() and not _is_checkpoint(p):
            found = sorted(p.glob("*.gguf"))
            if not found:
                raise UsageError(f"{p} holds no .gguf files and no config.json.", hint="Run `edgeq convert` first.")
            ggufs += [(f.stem.rsplit("-", 1)[0], f, gguf_variant(f)) for f in found]
        elif p.is_dir() or (not p.exists() and is_repo_id(m) and p.suffix != ".gguf"):
            from .convert import convert

            dl = download(m, revision=revision, token=token, progress=convert_progress)
            src = Path(dl.path)
            checkpoints.append((safe_name(m), src))
            if quants:
                res = convert(m if not dl.local else str(src), quants=quants, progress=convert_progress,
                              revision=dl.revision, token=token)
                ggufs += [(safe_name(m), Path(o.path), o.type) for o in res.outputs
                          if o.type in [q.upper() for q in quants]]
        else:
            raise UsageError(f"{m} does not exist.", hint="Pass a .gguf file, a folder, or an HF repo id / checkpoint.")
    return ggufs, checkpoints
