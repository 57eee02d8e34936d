"""Everything ``tune`` can refuse before the importance matrix, the Fisher pass and the per-type files (minutes to
an hour of work): each option, the texts, and a budget below the smallest file the model can become."""
from __future__ import annotations

import math
from pathlib import Path

from ..conversion.steps import calibration_text
from ..errors import SourceError, UsageError
from ..files import check_output_folder, safe_name
from ..sources import Source
from ..sources.checkpoint import read_safetensors_header
from ..sources.texts import read_user_text
from .allocate import check_budget, check_floor, min_bits
from .sensitivity import parse_types

MIN_CTX, MIN_EVAL_TOKENS = 16, 1024


def preflight(*, size: str | int | None, bpw: float | None, ram: str | None, device: str | None,
              max_kld: float | None, types: list[str] | None, ctx: int, outdir: str | Path | None, name: str | None,
              calibration: str | Path | None, imatrix_chunks: int, eval_text: str | Path | None, eval_tokens: int,
              threads: int | None) -> tuple[set[str], Path]:
    """(the allowed tensor types, the calibration text's file), or the first usage error; reads no model."""
    budgets = [b for b in (size, bpw, ram, device, max_kld) if b is not None]
    if len(budgets) != 1:
        raise UsageError("tune needs exactly one budget.",
                         hint="Pass one of --size 450MiB, --bpw 5.0, --ram 8G (with --ctx) or --for NAME, --max-kld 0.02.")
    check_budget(size, bpw, ram, device, max_kld)
    allowed = set(parse_types(types))
    if bpw is not None and bpw < (low := min_bits(allowed))[0]:
        raise UsageError(f"--bpw {bpw:g} is below the smallest of these types: {low[1]} stores {low[0]:g} bits per "
                         "weight.", hint=f"Ask for at least --bpw {math.ceil(low[0] * 10) / 10:g}, or allow smaller --types.")
    if ctx < MIN_CTX or imatrix_chunks < 1 or eval_tokens < MIN_EVAL_TOKENS or (threads is not None and threads < 1):
        raise UsageError(f"--ctx must be at least {MIN_CTX}, --imatrix-chunks at least 1, --eval-tokens at least "
                         f"{MIN_EVAL_TOKENS:,} and --threads at least 1.")
    if name is not None:
        safe_name(name)
    if outdir is not None:
        check_output_folder(Path(outdir))
    calib = calibration_text(calibration)
    if eval_text is not None:
        read_user_text(eval_text, "--text")
    return allowed, calib


def check_source_floor(src: Source, size: int | None, allowed: set[str]) -> None:
    """A size budget below what the checkpoint's parameters take at the smallest allowed type, refused from the
    safetensors headers alone (before the float file is made); a damaged header is left for convert to name."""
    if size is None or not src.is_checkpoint or src.path is None:
        return
    n = 0
    try:
        for p in sorted(src.path.glob("*.safetensors")):
            n += sum(math.prod(t["shape"]) for t in read_safetensors_header(p, check_data=False).values())
    except SourceError:  # a damaged header: convert names it in its own words
        return
    if n:
        check_floor(size, int(n * min_bits(allowed)[0] / 8), allowed, about=f" ({n:,} parameters)")
