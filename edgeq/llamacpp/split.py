"""Split a GGUF into shards llama.cpp loads as one model (``llama-gguf-split``), and join them again.

The shards are named as llama.cpp names them (``<stem>-00001-of-00003.gguf``): given the first, llama.cpp and
``llama-cli -hf`` find the rest.  ``llama-gguf-split`` counts ``--split-max-size`` in decimal megabytes and
puts whole tensors in each shard (and fails on a tensor above the limit); ``shard_limit_mb``
leaves room for the header and refuses a limit below one tensor.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

from ..errors import UsageError
from ..files import atomic_output
from . import Toolchain, run_tool

_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


def shard_names(stem: str, n: int) -> list[str]:
    """The names llama.cpp gives ``n`` shards of ``<stem>.gguf``."""
    return [f"{stem}-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]


def is_shard(name: str) -> bool:
    return bool(_SHARD.search(name))


def shard_limit_mb(max_bytes: int, header_bytes: int, largest_tensor_bytes: int) -> int:
    """The ``--split-max-size`` (MB of tensors) that keeps every shard within ``max_bytes``: the first shard
    carries the whole header (the vocabulary), and a tensor is never cut, so the largest must fit."""
    mb = (max_bytes - header_bytes) // 1_000_000
    if mb * 1_000_000 < largest_tensor_bytes:
        need = header_bytes + largest_tensor_bytes
        raise UsageError(f"a shard of {max_bytes:,} bytes cannot hold this file's header and largest tensor "
                         f"({need:,} bytes).", hint=f"Pass a --max-shard-size of at least {-(-need // 1_000_000)}MB.")
    return int(mb)


def split(tc: Toolchain, src: Path, dest: Path, max_mb: int) -> list[Path]:
    """Shards of ``src`` in the folder ``dest``, each at most ``max_mb`` MB of tensors; written whole or not at all
    (in a temporary folder beside ``dest``, moved in when every shard is there)."""
    dest.mkdir(parents=True, exist_ok=True)
    stem = src.name[: -len(".gguf")]
    with tempfile.TemporaryDirectory(dir=dest, prefix=".split-") as tmp:
        run_tool([tc.tool("llama-gguf-split"), "--split", "--split-max-size", f"{max_mb}M", src, Path(tmp) / stem],
                 name="llama-gguf-split")
        made = sorted(Path(tmp).glob(f"{stem}-*-of-*.gguf"))
        if not made or [p.name for p in made] != shard_names(stem, len(made)):
            raise UsageError(f"llama-gguf-split wrote {[p.name for p in made]} for {src.name}.",
                             hint="Report this with the file's `edgeq inspect` output.")
        for old in dest.glob(f"{stem}-*-of-*.gguf"):  # shards of an earlier split of another size
            old.unlink()
        out = []
        for p in made:
            p.replace(dest / p.name)
            out.append(dest / p.name)
    return out


def merge(tc: Toolchain, first: Path, dst: Path) -> Path:
    """One GGUF from the shards that start with ``first``, written whole or not at all."""
    with atomic_output(dst) as tmp:
        tmp.unlink(missing_ok=True)  # llama-gguf-split refuses to overwrite
        run_tool([tc.tool("llama-gguf-split"), "--merge", first, tmp], name="llama-gguf-split")
    return dst


__all__ = ["is_shard", "merge", "shard_limit_mb", "shard_names", "split"]
