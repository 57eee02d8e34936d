"""Everything ``ship`` can refuse before it converts anything: each option, the two folders, the push target.

A ship runs for minutes to an hour; an option it cannot use must be said at once, not after the conversion (an
unknown ``--for``, ``--max-kld 0`` and ``-o`` under a file were each found only then)."""
from __future__ import annotations

import math
import platform
from pathlib import Path

from .. import config, manifest
from ..conversion import steps
from ..errors import UsageError
from ..files import check_output_folder
from ..llamacpp import cross
from ..planning import devices
from ..planning.devices import parse_size
from ..planning.recommend import check_asks
from ..quants import parse_quants
from ..sources import Source
from ..uploading import destination

MIN_CTX, MIN_EVAL_TOKENS = 16, 1024


def preflight(*, target: str | None, ram: str | None, bandwidth_gbps: float | None, ctx: int,
              quants: list[str] | None, default_quants: tuple[str, ...], min_tps: float | None, max_kld: float | None,
              outdir: str | Path | None, workdir: str | Path | None, push: str | None, token: str | None,
              threads: int | None, eval_tokens: int, force: bool) -> tuple[int | None, list[str], str | None]:
    """(the target's RAM in bytes or None, the stock quant names, the repo ``push`` publishes to), or the first
    usage error.  Asks the Hub only who the token is, and only with ``push``."""
    if target and ram:
        raise UsageError("ship takes one target: --for DEVICE or --ram (with --bandwidth).", hint="Drop one of them.")
    if target:
        arch = devices.named(target).arch
        if arch in cross.TARGETS and arch != platform.machine():  # its deploy folder carries cross-built binaries
            cross.require_host(cross.TARGETS[arch])
    ram_bytes = parse_size(ram) if ram else None
    if bandwidth_gbps is not None and not (math.isfinite(bandwidth_gbps) and bandwidth_gbps > 0):
        raise UsageError(f"--bandwidth {bandwidth_gbps:g}: expected GB/s above 0.", hint="Example: --bandwidth 68")
    if ctx < MIN_CTX or eval_tokens < MIN_EVAL_TOKENS or (threads is not None and threads < 1):
        raise UsageError(f"--ctx must be at least {MIN_CTX}, --eval-tokens at least {MIN_EVAL_TOKENS:,} and "
                         f"--threads at least 1 (got {ctx}, {eval_tokens}, {threads}).")
    if quants is not None and not [q for q in quants if q.strip(" ,")]:
        raise UsageError("--quants names no type.", hint="Leave it out for the default, or name types: Q8_0,Q4_K_M.")
    stock = [q.name for q in parse_quants(list(quants or default_quants))]
    check_asks(min_tps, max_kld)
    for path, option in ((outdir, "-o"), (workdir, "--work")):
        if path is not None:
            check_output_folder(Path(path), option=option)
    if outdir is not None:
        manifest.claim(Path(outdir), "ship", force=force)
    repo = destination(push, token, None, default_name="") if push is not None else None
    return ram_bytes, stock, repo


def work_folder(src: Source, workdir: str | Path | None) -> Path:
    """Where ``convert`` puts the candidates (its own rule), so the default deploy folder ``dist/<that name>``."""
    return Path(workdir) if workdir else steps.own_folder(config.models_dir() / src.name, src.record())
