"""LoRA adapters: what a PEFT folder or an adapter GGUF holds, and whether it fits a base model.

Every check here reads headers only (``adapter_config.json``, the safetensors header, the GGUF tensor table),
so an adapter trained for another architecture or another shape is refused in one line before any conversion,
merge or load starts.  llama.cpp applies a LoRA as ``W x + scale * alpha / r * B (A x)``; anything PEFT can
train that this formula does not express (DoRA, rsLoRA's alpha / sqrt(r), per-module alphas, whole replaced
modules) is refused here too, because llama.cpp would otherwise apply another function than the one trained.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AdapterMismatch, SourceError, UnsafeSourceError, UsageError
from ..files import missing_file
from .checkpoint import read_safetensors_header
from .gguf_header import GGUFHeader, read_header

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."
# PEFT's tensor suffixes: (suffix, which factor, embedding?).  Read as a linear layer's (A: r x in, B: out x r),
# an embedding's factors swap roles: its lora_embedding_B (dim x r) is A transposed, its A (r x vocab) is B.
_SUFFIXES = ((".lora_A.weight", "A", False), (".lora_B.weight", "B", False),
             (".lora_embedding_A", "B", True), (".lora_embedding_B", "A", True))
# Norm weights mergekit-extract-lora puts in an adapter; the converter keeps them as they are.
_NORMS = ("_layernorm.weight", ".norm.weight")


@dataclass
class PeftAdapter:
    """A PEFT LoRA folder, checked: its config and each adapted base tensor's factor shapes."""

    path: Path
    rank: int
    alpha: float
    base_model: str | None  # adapter_config.json's base_model_name_or_path
    fan_in_fan_out: bool = False  # the base stores these weights transposed (GPT-2's Conv1D): in x out
    targets: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)  # base tensor -> (A, B) shapes
    norms: dict[str, list[int]] = field(default_factory=dict)  # base tensor -> shape, for norm weights it carries


def is_peft_adapter(folder: Path) -> bool:
    """A folder holding a PEFT adapter (``adapter_config.json``) and no model config of its own."""
    return (folder / CONFIG).is_file() and not (folder / "config.json").is_file()


def read_peft(folder: Path) -> PeftAdapter:
    """Read and check a PEFT LoRA folder: one line for the first thing llama.cpp cannot apply as trained."""
    hint = "Pass a folder saved by PEFT's save_pretrained (adapter_config.json and adapter_model.safetensors)."
    cfg_path = folder / CONFIG
    if not cfg_path.is_file():
        raise SourceError(f"{folder} has no {CONFIG}, so it is not a PEFT adapter.", hint=hint)
    try:
        cfg: dict[str, Any] = json.loads(cfg_path.read_text(encoding="utf-8"))
        if not isinstance(cfg, dict):
            raise ValueError("not a JSON object")
    except (ValueError, OSError) as e:
        raise SourceError(f"{cfg_path} is not readable JSON ({e}).", hint=hint) from e
    kind = str(cfg.get("peft_type", "LORA")).upper()
    unsupported = (f"a {kind} adapter" if kind != "LORA" else "a DoRA adapter" if cfg.get("use_dora")
                   else "an rsLoRA adapter (scaled alpha/sqrt(r); llama.cpp scales alpha/r)" if cfg.get("use_rslora")
                   else "a LoRA with per-module alphas (alpha_pattern)" if cfg.get("alpha_pattern") else None)
    if unsupported:
        raise SourceError(f"{folder.name} is {unsupported}, which llama.cpp cannot apply as it was trained.",
                          hint="Merge it in PEFT (merge_and_unload) and convert the merged model instead.")
    weights = folder / WEIGHTS
    if not weights.is_file():
        if (folder / "adapter_model.bin").is_file():
            raise UnsafeSourceError(f"{folder.name} has only pickled weights (adapter_model.bin); unpickling can "
                                    "run arbitrary code.",
                                    hint="Save the adapter with safetensors (PEFT's save_pretrained default).")
        raise SourceError(f"{folder} has no {WEIGHTS}: {weights.name} {missing_file(weights)}.", hint=hint)
    out = PeftAdapter(folder, int(cfg.get("r") or 0), float(cfg.get("lora_alpha") or 0.0),
                      str(cfg["base_model_name_or_path"]) if cfg.get("base_model_name_or_path") else None,
                      bool(cfg.get("fan_in_fan_out")))
    factors: dict[str, dict[str, list[int]]] = {}
    for name, t in read_safetensors_header(weights).items():
        base, which, embedding = split_name(name)
        if which is None:
            if name.endswith(_NORMS):
                out.norms[base] = list(t["shape"])
                continue
            raise SourceError(f"{folder.name} holds a whole tensor {name!r} (modules_to_save or new tokens), which a "
                              "llama.cpp adapter cannot carry.",
                              hint="Merge it in PEFT (merge_and_unload) and convert the merged model instead.")
        shape = list(t["shape"])
        factors.setdefault(base, {})[which] = shape[::-1] if embedding else shape
    for base, ab in sorted(factors.items()):
        if set(ab) != {"A", "B"}:
            raise SourceError(f"{folder.name} has no lora_{'AB'['A' in ab]} for {base!r}, only its pair.",
                              hint="The adapter file is incomplete: save it again.")
        out.targets[base] = (ab["A"], ab["B"])
    if not out.targets:
        raise SourceError(f"{folder.name} holds no LoRA tensors.", hint=hint)
    return out


def split_name(name: str) -> tuple[str, str | None, bool]:
    """``base_model.model.X.lora_A.weight`` → (``X.weight``, "A", False); anything else → (name, None, False)."""
    bare = name.removeprefix(_PREFIX)
    for suffix, which, embedding in _SUFFIXES:
        if bare.endswith(suffix):
            return bare[: -len(suffix)] + ".weight", which, embedding
    return bare, None, False


def check_fits(adapter: PeftAdapter, base_shapes: dict[str, list[int]], base_name: str) -> None:
    """Refuse an adapter whose modules are not in the base checkpoint, or have other shapes there."""
    missing = [n for n in adapter.targets if n not in base_shapes] + [n for n in adapter.norms if n not in base_shapes]
    trained = f" (it names {adapter.base_model})" if adapter.base_model else ""
    hint = f"Pass the base model the adapter was trained on{trained}."
    if missing:
        share = "none" if len(missing) == len(adapter.targets) + len(adapter.norms) else f"{len(missing)}"
        raise AdapterMismatch(f"adapter {adapter.path.name} is for another architecture than {base_name}: {share} of "
                              f"its {len(adapter.targets) + len(adapter.norms)} tensors are in the base, e.g. "
                              f"{missing[0]!r}.", hint=hint)
    for name, (a, b) in adapter.targets.items():
        want = base_shapes[name][::-1] if adapter.fan_in_fan_out else base_shapes[name]
        if len(a) != 2 or len(b) != 2 or a[0] != b[1] or [b[0], a[1]] != list(want):
            raise AdapterMismatch(f"adapter {adapter.path.name} does not fit {base_name}: {name} is "
                                  f"{'x'.join(map(str, want))} in the base, and the adapter's A {'x'.join(map(str, a))} "
                                  f"and B {'x'.join(map(str, b))} make {'x'.join(map(str, [b[0], a[-1]]))}.", hint=hint)
    for name, shape in adapter.norms.items():
        if list(shape) != list(base_shapes[name]):
            raise AdapterMismatch(f"adapter {adapter.path.name} does not fit {base_name}: {name} is "
                                  f"{base_shapes[name]} in the base and {shape} in the adapter.", hint=hint)


def checkpoint_shapes(folder: Path) -> dict[str, list[int]]:
    """Every tensor's shape in a checkpoint folder's safetensors (headers only)."""
    return {name: list(t["shape"]) for p in sorted(folder.glob("*.safetensors"))
            for name, t in read_safetensors_header(p, check_data=False).items()}


def read_gguf_adapter(path: Path) -> GGUFHeader:
    """The header of a LoRA adapter GGUF; a model GGUF or another adapter kind is refused in one line."""
    h = read_header(path)
    kind, adapter = h.metadata.get("general.type"), h.metadata.get("adapter.type")
    if kind != "adapter" or adapter != "lora":
        what = f"a {adapter} adapter" if kind == "adapter" else "a model, not an adapter"
        raise SourceError(f"{path.name} is {what} (general.type {kind!r}); --lora takes a LoRA adapter GGUF.",
                          hint="Make one with `edgeq convert BASE --lora PEFT_FOLDER_OR_REPO`.")
    return h


def check_gguf_fits(adapter: Path, model: Path) -> None:
    """Refuse an adapter GGUF made for another architecture or other shapes than the model GGUF, before a load.

    The checks llama.cpp's ``llama_adapter_lora_init`` makes, from the headers: the same
    ``general.architecture``; for each ``X.lora_a``/``X.lora_b`` a tensor X in the model with A's row length and
    B's row count; A and B of one rank.
    """
    a = read_gguf_adapter(adapter)
    m = read_header(model)
    arch_a, arch_m = a.metadata.get("general.architecture"), m.metadata.get("general.architecture")
    hint = "Pass the base model the adapter was converted against (or convert the adapter against this one)."
    if arch_a != arch_m:
        raise AdapterMismatch(f"adapter {adapter.name} is for {arch_a}, and {model.name} is {arch_m}.", hint=hint)
    shapes = {t.name: t.shape for t in m.tensors}
    pairs: dict[str, dict[str, list[int]]] = {}
    for t in a.tensors:
        for suffix in (".lora_a", ".lora_b"):
            if t.name.endswith(suffix):
                pairs.setdefault(t.name[: -len(suffix)], {})[suffix[-1]] = t.shape
    for name, ab in pairs.items():
        if name not in shapes:
            raise AdapterMismatch(f"adapter {adapter.name} adapts {name}, which {model.name} does not have.", hint=hint)
        if set(ab) != {"a", "b"}:
            raise SourceError(f"adapter {adapter.name} has {name} with one LoRA factor only.",
                              hint="Convert the adapter again.")
        w, la, lb = shapes[name], ab["a"], ab["b"]
        if la[0] != w[0] or lb[1] != w[1] or la[1] != lb[0]:
            raise AdapterMismatch(f"adapter {adapter.name} does not fit {model.name}: {name} is "
                                  f"{'x'.join(map(str, w))} in the model and {la[0]}x{lb[1]} in the adapter.", hint=hint)


def check_lora_scale(lora: object, scale: float, *, flag: str = "--lora") -> None:
    """A scale given without the adapter it scales would be dropped without a word: refused instead."""
    if scale != 1.0 and not lora:
        raise UsageError(f"--lora-scale {scale:g} scales a {flag} adapter, and none was given.",
                         hint=f"Add {flag} ADAPTER, or leave --lora-scale out.")


def require_adapter_for(lora: str | Path, models: list[Path]) -> Path:
    """The ``--lora`` argument of run, bench and eval: an adapter GGUF that fits every model in ``models``, or one
    line saying what it is instead (a missing file, a PEFT folder not yet converted, a model, a misfit)."""
    path = Path(lora).expanduser()
    if path.is_dir() and is_peft_adapter(path):
        raise SourceError(f"--lora {path} is a PEFT adapter folder; --lora here takes its GGUF.",
                          hint=f"Convert it first: edgeq convert BASE --lora {path}")
    if not path.is_file():
        raise SourceError(f"--lora {path} {missing_file(path)}.",
                          hint="Pass an adapter GGUF (edgeq convert BASE --lora ADAPTER makes one).")
    for model in models:
        check_gguf_fits(path, model)
    return path.resolve()
