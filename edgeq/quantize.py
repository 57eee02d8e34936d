"""Run llama-quantize: one GGUF in, one quantized GGUF out, written whole or not at all."""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from .files import atomic_output
from .quants import QuantType
from .toolchain import Toolchain, run_tool

_STEP = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]")


def quantize(tc: Toolchain, src: Path, dst: Path, qtype: QuantType, *, threads: int | None = None,
             extra_args: tuple[str, ...] = (), on_step: Callable[[int, int], None] | None = None) -> Path:
    """Quantize ``src`` (an F16/BF16/F32 GGUF) to ``qtype`` at ``dst``.

    ``on_step(done, total)`` is called per tensor, parsed from llama-quantize's
    ``[ 12/ 272]`` lines.
    """

    def on_line(line: str) -> None:
        m = _STEP.match(line)
        if m and on_step:
            on_step(int(m.group(1)), int(m.group(2)))

    with atomic_output(dst) as tmp:
        argv: list[str | Path] = [tc.tool("llama-quantize"), *extra_args, src, tmp, qtype.name]
        if threads:
            argv.append(str(threads))
        run_tool(argv, name="llama-quantize", on_line=on_line)
    return dst
