"""What a vision-language model adds to a plan: its projector in RAM beside the text model, the projector's
compute buffer for one image, and the context positions one image takes.

Read from headers only: a converted pair's projector GGUF (the one the manifest pairs with the model), or a
local HF checkpoint's vision tensors (at F16, the type ``convert`` pairs) and config.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import config
from ..llamacpp.converter import projector_architectures
from ..sources import resolve
from ..sources.checkpoint import architecture, read_config, read_safetensors_header
from ..sources.gguf_header import read_header
from ..sources.projector import recorded_projector

# Activations per patch of one image, in floats (as the text model's: residual, norms, attention, MLP).
_ACT_EMBD, _ACT_FF = 6, 3
# Tensors of a VLM checkpoint that are the text model's, not the projector's.
_TEXT_PREFIXES = ("language_model.", "model.language_model.", "model.text_model.", "text_model.", "lm_head.",
                  "model.lm_head.")


@dataclass
class VisionPlan:
    projector: str  # the projector file, or "(predicted from <checkpoint>)"
    projector_type: str
    projector_bytes: int  # the file (measured) or its vision tensors at F16 (predicted)
    measured: bool
    encoder_compute_bytes: int  # graph memory of one image slice through the encoder
    image_tokens: int | None  # context positions one image takes (None: edgeq cannot tell for this type)
    image_tokens_rule: str  # how image_tokens was counted

    @property
    def ram_bytes(self) -> int:
        return self.projector_bytes + self.encoder_compute_bytes


def vision_plan(source: str | None) -> VisionPlan | None:
    """The projector side of ``source`` (a GGUF with a paired projector, a folder of a converted pair, or a local
    VLM checkpoint); None for a text-only model or a Hub source (whose vision tensors plan does not fetch: the
    planner does not ask for one)."""
    src = resolve(source, fetch=False)
    if src.path is None or src.kind == "hub":
        return None
    if src.is_checkpoint:
        return _from_checkpoint(src.path)
    models = src.ggufs()
    proj = next((p for m in models if (p := recorded_projector(m)) is not None and p.is_file()), None)
    return _from_projector(proj) if proj else None


def _from_projector(path: Path) -> VisionPlan:
    m = read_header(path).metadata
    kind = str(m.get("clip.projector_type") or "?")
    side, patch = int(m.get("clip.vision.image_size") or 0), int(m.get("clip.vision.patch_size") or 1)
    hidden, ff = int(m.get("clip.vision.embedding_length") or 0), int(m.get("clip.vision.feed_forward_length") or 0)
    scale = int(m.get("clip.vision.projector.scale_factor") or 0)
    tokens, rule = image_tokens(kind, side, patch, scale, int(m.get("clip.vision.preproc_image_size") or side))
    return VisionPlan(path.name, kind, path.stat().st_size, True, _encoder_compute(side, patch, hidden, ff), tokens,
                      rule)


def image_tokens(kind: str, side: int, patch: int, scale: int, longest_edge: int) -> tuple[int | None, str]:
    """Positions one image takes in the context, by how libmtmd lays out the projector's output."""
    per_side = side // patch if patch else 0
    if kind == "idefics3":  # an overview and a grid of tiles, each per_side / scale squared
        s = scale or 2
        grid = math.ceil(longest_edge / side) if side else 1
        tiles = 1 + grid * grid
        return tiles * (per_side // s) ** 2, f"{tiles} slices of ({per_side}/{s})² tokens (an image at the longest edge)"
    if kind == "gemma3":  # average-pooled to a fixed grid
        s = scale or 4
        return (per_side // s) ** 2, f"({per_side}/{s})² tokens, any image"
    return None, f"not counted: libmtmd lays out {kind} images by their size"


def _encoder_compute(side: int, patch: int, hidden: int, ff: int) -> int:
    n = (side // patch) ** 2 if patch else 0
    return 4 * n * (_ACT_EMBD * hidden + _ACT_FF * ff)


def _from_checkpoint(folder: Path) -> VisionPlan | None:
    cfg = read_config(folder)
    arch = architecture(cfg)
    if arch not in projector_architectures(config.llama_dir()):
        return None
    params = 0
    for f in sorted(folder.glob("*.safetensors")):
        for name, t in read_safetensors_header(f, check_data=False).items():
            if name != "__metadata__" and not name.startswith(_TEXT_PREFIXES):
                params += math.prod(t.get("shape") or [1])
    vc: dict[str, Any] = cfg.get("vision_config") or {}
    side, patch = int(vc.get("image_size") or 0), int(vc.get("patch_size") or 1)
    tokens: int | None
    if arch.startswith("Gemma3"):
        per = int(cfg.get("mm_tokens_per_image") or 256)
        tokens, rule = per, f"{per} tokens (mm_tokens_per_image), any image"
    elif arch in ("Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration"):
        tokens, rule = image_tokens("idefics3", side, patch, int(cfg.get("scale_factor") or 2), _longest_edge(folder, side))
    else:
        tokens, rule = None, f"not counted: libmtmd lays out {arch} images by their size"
    return VisionPlan(f"(predicted from {folder.name})", arch, 2 * params, False,
                      _encoder_compute(side, patch, int(vc.get("hidden_size") or 0),
                                       int(vc.get("intermediate_size") or 0)), tokens, rule)


def _longest_edge(folder: Path, default: int) -> int:
    import json

    try:
        pre = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
        return int((pre.get("size") or {}).get("longest_edge") or default)
    except (OSError, ValueError, TypeError, AttributeError):
        return default
