"""LoRA adapters in ``convert``: ``--lora`` writes the adapter GGUF against its base (the vendored
``convert_lora_to_gguf.py``), ``--merge-lora`` makes the merged model's float GGUF (``merge``, then the vendored
converter), which the quants are then made from as from any float GGUF.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import manifest
from ..errors import UsageError
from ..files import atomic_output, ensure_folder, folder_lock, remove_stale_incomplete, safe_name
from ..llamacpp import Toolchain, llama_cpp_version
from ..llamacpp.lora import convert_lora
from ..output import note
from ..sources import Source, resolve
from ..sources import gguf as gguf_info
from ..sources.adapter import PeftAdapter, check_fits, checkpoint_shapes, is_peft_adapter, read_peft
from ..sources.checkpoint import Checkpoint
from . import merge, steps
from .recorder import Recorder

ADAPTER_TYPE = "F16"  # what --lora writes: the type llama.cpp's own docs convert adapters to


@dataclass
class AdapterOutput:
    """The adapter GGUF ``convert --lora`` wrote (or reused), in a folder and manifest of its own."""

    path: str
    manifest: str
    base: str  # the base model it fits (its name)
    rank: int
    alpha: float
    tensors: int  # base tensors it adapts
    size_bytes: int
    seconds: float
    reused: bool


@dataclass
class MergedLora:
    """What ``convert --merge-lora`` merged into every output (the manifest's ``merge_lora`` holds its record)."""

    adapter: str  # the folder or repo id given
    fingerprint: str  # which files: repo@commit, or the folder's names, sizes and mtimes
    scale: float


@dataclass
class Adapter:
    """A resolved and checked PEFT adapter (``prepare``)."""

    source: Source
    peft: PeftAdapter

    @property
    def path(self) -> Path:
        return self.peft.path


def prepare(arg: str | Path, ck: Checkpoint, base_name: str, *, revision: str | None = None, token: str | None = None,
            endpoint: str | None = None, progress: bool = True) -> Adapter:
    """Resolve ``arg`` (a PEFT folder or repo id, through ``sources.resolve``) and check it fits the base ``ck``:
    everything a mismatch can be refused on, read from headers, before any file is written."""
    src = resolve(arg, revision=revision, token=token, endpoint=endpoint, progress=progress)
    if src.path is None or not src.path.is_dir() or not is_peft_adapter(src.path):
        raise UsageError(f"{arg} is not a PEFT LoRA adapter (no adapter_config.json without a config.json).",
                         hint="Pass the folder or repo id of an adapter saved by PEFT; a model is the SOURCE.")
    peft = read_peft(src.path)
    check_fits(peft, checkpoint_shapes(ck.path), base_name)
    return Adapter(src, peft)


def refuse_adapter_as_model(src: Source) -> None:
    """A PEFT adapter passed where a model goes: say what to pass instead."""
    if src.path is not None and src.path.is_dir() and is_peft_adapter(src.path):
        raise UsageError(f"{src.arg or src.path} is a LoRA adapter, not a model.",
                         hint="Pass its base model as SOURCE and the adapter with --lora (or --merge-lora).")


def merge_recipe(adapter: Adapter, scale: float) -> tuple[str, ...]:
    """The parts a merged file's recipe adds to the base's: which adapter, at which scale."""
    return ("merge-lora", adapter.source.fingerprint, f"{scale:g}")


def merge_float(ck: Checkpoint, adapter: Adapter, dst: Path, *, scale: float,
                convert: Callable[[Checkpoint], object]) -> None:
    """Make ``dst``, the merged model's float GGUF: the merged checkpoint in a temporary folder beside it (linked
    to the base where the adapter changes nothing), then ``convert(checkpoint)``, the pipeline's own converter
    step, which writes ``dst`` under a temporary name and renames it when whole."""
    tmp = Path(tempfile.mkdtemp(prefix=".edgeq-merge-", dir=dst.parent))
    try:
        merge.merge_checkpoint(ck.path, adapter.peft, tmp / ck.path.name, scale=scale)
        convert(dataclasses.replace(ck, path=tmp / ck.path.name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def merge_disk(ck: Checkpoint, adapter: Adapter) -> dict[str, int]:
    """What a merge holds on disk while it runs (for the disk check before any work)."""
    return {"merged checkpoint (temporary)": merge.merged_bytes(ck.path, adapter.peft)}


def write_adapter(tc: Toolchain, ck: Checkpoint, base: Source, adapter: Adapter, base_folder: Path, *,
                  force: bool = False) -> AdapterOutput:
    """The adapter GGUF in ``<base folder>/lora-<adapter>/``, with a manifest of its own that records the base it
    was converted against (a subfolder: the base folder's GGUFs are read as models, and an adapter is not one);
    reused when current."""
    t0 = time.perf_counter()
    src_info = adapter.source.record()
    stem = adapter.source.name
    out = ensure_folder(base_folder / f"lora-{safe_name(stem)}")
    path = out / steps.output_name(stem, ADAPTER_TYPE)
    recipe = steps.recipe(src_info, tc, "lora", ADAPTER_TYPE, base.fingerprint)
    with folder_lock(out, doing="converts"):
        for stale in remove_stale_incomplete(out):
            note(f"removed {stale.name}, left by an interrupted run")
        old = steps.same_model_or_refuse(out, manifest.load(out), src_info, force=force)
        reused = not force and manifest.is_current(out, old, path.name, recipe)
        mf = manifest.Manifest(source=src_info, llama_cpp=llama_cpp_version(tc),
                               options={"adapter": {"type": "lora", "base": base.record(), "rank": adapter.peft.rank,
                                                    "alpha": adapter.peft.alpha}})
        mf.files = dict(old.files) if old else {}
        if not reused:
            steps.check_free_disk(out, {path.name: 2 * adapter.path.joinpath("adapter_model.safetensors").stat().st_size})
            with atomic_output(path) as tmp:
                convert_lora(tc, adapter.path, ck.path, tmp, outtype=ADAPTER_TYPE.lower())
            with Recorder(out, mf) as rec:
                rec.add(path, ADAPTER_TYPE, gguf_info.read(path).bits_per_weight, recipe)
        manifest.save(out, mf)
    return AdapterOutput(path=str(path), manifest=str(manifest.manifest_path(out)), base=base.name,
                         rank=adapter.peft.rank, alpha=adapter.peft.alpha, tensors=len(adapter.peft.targets),
                         size_bytes=path.stat().st_size, seconds=round(time.perf_counter() - t0, 2), reused=reused)
