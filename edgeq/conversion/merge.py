"""``convert --merge-lora``: the base checkpoint with a PEFT LoRA merged in, written as a checkpoint for the
vendored converter, one safetensors shard at a time.

Why here and not llama.cpp's ``llama-export-lora``: the pinned tree builds that tool only without
``GGML_BACKEND_DL`` (it calls the CPU backend directly), and edgeq's build loads ggml's CPU levels dynamically,
so the tool does not exist in it.  Why not PEFT's ``merge_and_unload``: it loads the whole model (an 8B base is
32 GB in fp32) and would make peft a dependency; this is the same arithmetic, ``W + scale · alpha / r · B A``, done
per shard.  Each merged tensor is kept in fp32, so the converter rounds it once, to the float type asked for,
and the merged model's F16 GGUF is quantized like any other.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ..sources.adapter import WEIGHTS, PeftAdapter, split_name
from ..sources.checkpoint import DTYPE_BYTES, read_safetensors_header


def merged_bytes(base: Path, adapter: PeftAdapter) -> int:
    """Bytes the merged checkpoint writes: the shards holding an adapted tensor, those tensors in fp32 (the
    others are linked, not copied)."""
    total = 0
    for shard in sorted(base.glob("*.safetensors")):
        header = read_safetensors_header(shard, check_data=False)
        if any(n in adapter.targets or n in adapter.norms for n in header):
            total += sum(math.prod(t["shape"]) * (4 if n in adapter.targets else DTYPE_BYTES.get(t["dtype"], 4))
                         for n, t in header.items())
    return total


def merge_checkpoint(base: Path, adapter: PeftAdapter, dest: Path, *, scale: float = 1.0) -> Path:
    """Write ``dest``: ``base`` (an HF checkpoint folder) with ``adapter`` merged in at ``scale``.

    Shards the adapter does not touch, and every other file, are symbolic links to the base's.
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    factors = _factors(adapter)
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(base.iterdir()):
        if f.suffix != ".safetensors":
            os.symlink(f.resolve(), dest / f.name)
    for shard in sorted(base.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as sf:
            names = list(sf.keys())
            if not any(n in factors for n in names):
                os.symlink(shard.resolve(), dest / shard.name)
                continue
            merged: dict[str, Any] = {}
            for name in names:
                t = sf.get_tensor(name)
                if name in factors:
                    a, b, norm = factors[name]
                    if norm is not None:  # a norm weight the adapter replaces (mergekit-extract-lora)
                        t = norm.to(t.dtype)
                    else:
                        # PEFT's scaling: alpha / r, r being this module's rank (rank_pattern may vary it).
                        delta = (b @ a) * (scale * adapter.alpha / a.shape[0])
                        t = t.to(torch.float32) + (delta.T if adapter.fan_in_fan_out else delta)
                merged[name] = t.contiguous()
            metadata = sf.metadata()
        save_file(merged, str(dest / shard.name), metadata=metadata)
    return dest


def _factors(adapter: PeftAdapter) -> dict[str, tuple[Any, Any, Any]]:
    """Base tensor name -> (A: r x in, B: out x r, None) in fp32, or (None, None, norm) for a replaced norm."""
    import torch
    from safetensors import safe_open

    parts: dict[str, dict[str, Any]] = {}
    out: dict[str, tuple[Any, Any, Any]] = {}
    with safe_open(str(adapter.path / WEIGHTS), framework="pt") as sf:
        for name in sf.keys():  # noqa: SIM118 - safe_open is no mapping
            base, which, embedding = split_name(name)
            t = sf.get_tensor(name).to(torch.float32)
            if which is None:
                out[base] = (None, None, t)
            else:  # an embedding's factors are stored transposed (see sources.adapter)
                parts.setdefault(base, {})[which] = t.T if embedding else t
    out.update({base: (ab["A"], ab["B"], None) for base, ab in parts.items()})
    return out
