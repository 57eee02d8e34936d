"""A vision-language model's pair of files: the text model and its multimodal projector (mmproj).

The manifest of a convert folder pairs them (``FileRecord.projector``); a GGUF from elsewhere is paired by
``--mmproj``.  Every check here runs before any work: a projector passed as the model, a model with no projector,
a projector whose output width is not the model's embedding width, a recorded projector that is gone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import MANIFEST_NAME
from ..errors import SourceError, UsageError
from ..files import missing_file
from .gguf import PROJECTOR_ARCH, PROJECTOR_HINT, file_type_name
from .gguf_header import read_header

MMPROJ_HINT = "Pass --mmproj FILE (the mmproj-*.gguf converted with this model), or convert it with `edgeq convert`."


@dataclass
class ProjectorInfo:
    """What ``inspect`` and ``plan`` say about a projector (the ``clip.*`` keys the converter writes)."""

    path: str
    projector_type: str  # llama.cpp's name: idefics3, gemma3, qwen2vl_merger, ...
    file_type: str | None
    size_bytes: int
    image_size: int | None  # the encoder's input side in pixels
    patch_size: int | None
    output_width: int | None  # the text model's embedding width it projects into
    models: list[str] = field(default_factory=list)  # the text models its manifest records it was converted with


def is_projector(path: Path) -> bool:
    return str(read_header(path).metadata.get("general.architecture") or "") == PROJECTOR_ARCH


def read_projector(path: str | Path) -> ProjectorInfo:
    """The projector's summary, with the models its folder's manifest pairs with it."""
    p = Path(path)
    h = read_header(p)
    m = h.metadata

    def num(key: str) -> int | None:
        v = m.get(key)
        return int(v) if isinstance(v, int) and not isinstance(v, bool) else None

    recs = _records(p.parent)
    # Converted with it: every text model of the manifest that records this projector.
    models = [name for name, rec in recs.items() if rec.get("role", "model") == "model"] if p.name in recs else []
    return ProjectorInfo(path=str(p), projector_type=str(m.get("clip.projector_type") or "?"),
                         file_type=file_type_name(m.get("general.file_type")), size_bytes=h.file_size_bytes,
                         image_size=num("clip.vision.image_size"), patch_size=num("clip.vision.patch_size"),
                         output_width=num("clip.vision.projection_dim"), models=models)


def recorded_projector(model: Path) -> Path | None:
    """The projector the manifest beside ``model`` pairs it with (None: no manifest, or a text-only model)."""
    name = _records(model.parent).get(model.name, {}).get("projector")
    return model.parent / str(name) if name else None


def projector_for(model: Path, mmproj: str | Path | None, *, doing: str) -> Path:
    """The projector to run ``model`` with: ``mmproj`` if given, else the manifest's; refused in one line when
    there is none, it is missing, it is not a projector, or its output width is not the model's."""
    if is_projector(model):
        raise SourceError(f"{model.name} is a multimodal projector (mmproj), not a model; {doing}.", hint=PROJECTOR_HINT)
    if mmproj is not None:
        proj = Path(mmproj).expanduser()
        if not proj.is_file():
            raise UsageError(f"--mmproj {proj} {missing_file(proj)}.", hint=MMPROJ_HINT)
    else:
        found = recorded_projector(model)
        if found is None:
            raise UsageError(f"{model.name} has no multimodal projector: its folder's {MANIFEST_NAME} pairs none "
                             f"with it, so it cannot see an image; {doing}.", hint=MMPROJ_HINT)
        if not found.is_file():
            raise SourceError(f"{model.name}'s projector {found.name}, which the manifest pairs with it, "
                              f"{missing_file(found)}.", hint="Run `edgeq convert` again to remake it, or pass "
                                                              "--mmproj FILE.")
        proj = found
    check_pair(model, proj)
    return proj


def check_pair(model: Path, proj: Path) -> None:
    """A projector feeds the text model vectors of its own embedding width; refuse another model's projector."""
    if not is_projector(proj):
        raise UsageError(f"--mmproj {proj.name} is not a multimodal projector (its architecture is "
                         f"{read_header(proj).metadata.get('general.architecture')!r}).", hint=MMPROJ_HINT)
    mm = read_header(model).metadata
    arch = mm.get("general.architecture")
    width, out = mm.get(f"{arch}.embedding_length"), read_header(proj).metadata.get("clip.vision.projection_dim")
    if isinstance(width, int) and isinstance(out, int) and width != out:
        raise UsageError(f"{proj.name} projects images to {out}-wide vectors but {model.name} embeds tokens in "
                         f"{width}: it is another model's projector.", hint=MMPROJ_HINT)
    made_from, model_from = _source(proj.parent) if proj.name in _records(proj.parent) else None, _source(model.parent)
    if made_from and model_from and made_from != model_from:
        raise UsageError(f"{proj.name} was converted from {made_from}, {model.name} from {model_from} (their "
                         f"manifests): it is another model's projector.", hint=MMPROJ_HINT)


def _source(folder: Path) -> str | None:
    """What the folder's manifest says its files were converted from (a repo id or a path), or None."""
    import json

    try:
        src = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8")).get("source", {})
        return str(src.get("repo_id") or src.get("path")) if isinstance(src, dict) else None
    except (OSError, ValueError, AttributeError):
        return None


def _records(folder: Path) -> dict[str, dict[str, object]]:
    """The manifest's file records as plain dicts ({} without a readable manifest): read here rather than with
    ``edgeq.manifest``, which a damaged file makes raise; pairing is a lookup, not a verification."""
    import json

    try:
        raw = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        files = raw.get("files", {}) if isinstance(raw, dict) else {}
        return {k: v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) else {}
    except (OSError, ValueError):
        return {}


def describe_pair(path: Path) -> dict[str, object]:
    """What ``inspect`` adds about the pair: a projector's summary (with the models paired with it), or the
    projector the manifest pairs with a model ({} for a text-only model)."""
    from dataclasses import asdict

    if is_projector(path):
        return {"projector": asdict(read_projector(path))}
    found = recorded_projector(path)
    return {"paired_projector": str(found), "paired_projector_exists": found.is_file()} if found else {}
