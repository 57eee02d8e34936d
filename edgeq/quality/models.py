"""Turn MODEL arguments into ``ModelRef`` rows and open a scorer for each (GGUF or transformers)."""
from __future__ import annotations

from pathlib import Path

from .. import manifest
from ..backends import Scorer
from ..backends.isolated import ChildScorer
from ..backends.transformers import VARIANTS, unavailable_reason
from ..conversion.models import plan_models
from ..errors import UsageError
from ..sources.gguf import read
from .results import ModelRef


def gguf_ref(path: Path) -> ModelRef:
    """Name and variant of a GGUF: the manifest's label (e.g. Q4_K_M-imat) where edgeq made it."""

    info = read(path)
    mf = manifest.load(path.parent)
    variant = mf.files[path.name].type if mf and path.name in mf.files else (info.file_type or path.stem)
    name = path.stem[: -len(variant) - 1] if path.stem.endswith("-" + variant) else path.stem
    return ModelRef(name=name, variant=variant, backend="llama.cpp", path=str(path), size_bytes=info.file_size_bytes,
                    bits_per_weight=info.bits_per_weight)


def hf_ref(name: str, path: Path, variant: str = "fp32") -> ModelRef:
    size = sum(p.stat().st_size for p in path.glob("*.safetensors")) if variant == "fp32" else 0
    return ModelRef(name=name, variant=variant, backend="transformers", path=str(path), size_bytes=size or None,
                    bits_per_weight=None)


def model_refs(models: list[str], quants: list[str] | None, progress: bool, *, revision: str | None = None,
            token: str | None = None, hf_variants: list[str] | None = None) -> list[ModelRef]:
    """GGUF files, folders of them, HF checkpoints or repo ids (converted to ``quants`` first, as bench does);
    each checkpoint is scored in transformers as each of ``hf_variants`` (default fp32 only).

    No argument means the embedded model.
    """
    bad = [v for v in hf_variants or [] if v not in VARIANTS]
    if bad:
        raise UsageError(f"--hf {bad[0]!r} is not a transformers variant.", hint=f"Use some of: {', '.join(VARIANTS)}.")
    for v in hf_variants or []:
        if (why := unavailable_reason(v, "cpu")) is not None:
            raise UsageError(f"--hf {v}: {why}.", hint="Leave that variant out of --hf.")
    # fp32 is scored whenever another variant is: it is the reference the others' KLD is measured against.
    variants = ["fp32", *[v for v in hf_variants or [] if v != "fp32"]]
    ggufs, checkpoints = plan_models(models, quants, progress, revision=revision, token=token,
                                      doing="edgeq eval scores its next-token predictions")
    refs = [hf_ref(name, path, v) for name, path in checkpoints for v in variants]
    refs += [gguf_ref(path) for _, path, _ in ggufs]
    seen: dict[tuple[str, str, str], ModelRef] = {}
    for r in refs:
        seen.setdefault((r.backend, r.variant, str(Path(r.path).resolve())), r)
    return list(seen.values())


def default_reference(refs: list[ModelRef]) -> ModelRef | None:
    """The most precise model given: an HF checkpoint in fp32, else the widest float GGUF."""
    for r in refs:
        if r.backend == "transformers" and r.variant == "fp32":
            return r
    for variant in ("F32", "BF16", "F16"):
        for r in refs:
            if r.variant == variant:
                return r
    return None


def pick_reference(arg: str | None, refs: list[ModelRef], progress: bool) -> ModelRef | None:
    if arg is None:
        return default_reference(refs)
    found = model_refs([arg], None, progress)
    if len(found) != 1:
        raise UsageError(f"--reference {arg} names {len(found)} models; it must name one.",
                         hint="Pass one .gguf file or one HF checkpoint.")
    return found[0]


def open_scorer(ref: ModelRef, *, n_ctx: int, threads: int, device: str = "cpu") -> Scorer:
    """A scorer with ``tokenize``, ``logits``, ``n_vocab``, ``adds_bos``, ``bos_id`` and ``close``.

    It runs in a child process (``backends.isolated``), so a crash in llama.cpp
    or torch is one error line naming the file, and edgeq carries on to report it.
    """
    return ChildScorer(ref.backend, ref.path, n_ctx=n_ctx, threads=threads,
                       variant=ref.variant if ref.backend == "transformers" else None, device=device,
                       lora=ref.lora, lora_scale=ref.lora_scale if ref.lora_scale is not None else 1.0)
