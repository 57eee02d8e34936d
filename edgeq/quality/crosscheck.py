"""Cross-check our perplexity and KL-divergence against llama.cpp's own ``llama-perplexity``.

Same text, same window size, same number of windows: the two must agree
(KLD within 5%), or one of them is scoring something else.
"""
from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..compute import Compute, for_resolved
from ..llamacpp import find_toolchain, run_tool

KLD_TOLERANCE = 0.05
_PATTERNS = {
    "ppl": re.compile(r"^Mean PPL\(Q\)\s*:\s*([\d.]+)"),
    "kld_mean": re.compile(r"^Mean\s+KLD:\s*([\d.eE+-]+)"),
    "kld_p99": re.compile(r"^99\.0%\s+KLD:\s*([\d.eE+-]+)"),
    "top1_pct": re.compile(r"^Same top p:\s*([\d.]+)"),  # the summary's last line that edgeq reads
}


@dataclass
class CrossCheck:
    base: str
    model: str
    windows: int
    ours_kld_mean: float
    tool_kld_mean: float
    ours_top1_pct: float
    tool_top1_pct: float
    ours_ppl: float
    tool_ppl: float
    kld_diff: float  # relative
    agrees: bool


def llama_perplexity_kld(base: Path, model: Path, text: str, *, ctx: int, windows: int, threads: int,
                         model_tool: Sequence[str | Path] | None = None,
                         compute: Compute | None = None) -> dict[str, float]:
    """Run llama-perplexity twice (save the base's logits, then compare the model) and parse its summary.

    ``model_tool``: the command that scores the model, when not this machine's llama-perplexity (another
    architecture's, under an emulator: the logits file is the same little-endian floats on both).
    ``compute``: the device edgeq scored on (default the CPU): the tool gets the same layers, never its own
    default, which offloads every layer to Metal on a Mac.
    """
    tc = find_toolchain()
    tool = tc.tool("llama-perplexity")
    found: dict[str, float] = {}

    def on_line(line: str) -> None:
        for key, pat in _PATTERNS.items():
            if m := pat.match(line.strip()):
                found[key] = float(m.group(1))

    with tempfile.TemporaryDirectory(prefix="edgeq-xcheck-") as tmp:
        text_file, logits = Path(tmp) / "text.txt", Path(tmp) / "base.kld"
        text_file.write_text(text, encoding="utf-8")
        common: list[str | Path] = ["-f", text_file, "-c", str(ctx), "--chunks", str(windows), "-t", str(threads), "-b", str(ctx),
                                    *(compute or for_resolved("cpu")).tool_args("llama-perplexity")]
        run_tool([tool, "-m", base, *common, "--kl-divergence-base", logits], name="llama-perplexity")
        run_tool([*(model_tool or [tool]), "-m", model, *common, "--kl-divergence-base", logits, "--kl-divergence"],
                 name="llama-perplexity", on_line=on_line, until=_PATTERNS["top1_pct"])
    return found


def cross_check(base_path: str, model_path: str, ours: dict[str, float], text: str, *, ctx: int, windows: int,
                threads: int, compute: Compute | None = None) -> CrossCheck:
    """Compare our KLD/top-1/PPL for ``model_path`` against ``base_path`` with llama-perplexity's."""
    tool = llama_perplexity_kld(Path(base_path), Path(model_path), text, ctx=ctx, windows=windows, threads=threads,
                                compute=compute)
    diff = abs(tool.get("kld_mean", float("nan")) / ours["kld_mean"] - 1.0) if ours["kld_mean"] else float("inf")
    return CrossCheck(base=base_path, model=model_path, windows=windows, ours_kld_mean=ours["kld_mean"],
                      tool_kld_mean=tool.get("kld_mean", float("nan")), ours_top1_pct=ours["top1_pct"],
                      tool_top1_pct=tool.get("top1_pct", float("nan")), ours_ppl=ours["ppl"],
                      tool_ppl=tool.get("ppl", float("nan")), kld_diff=diff, agrees=diff <= KLD_TOLERANCE)
