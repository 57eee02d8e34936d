"""The verification every tune ends with: the tuned file next to the stock recipes around it, on the evaluation text."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import write_json_atomic
from ..llamacpp.quantize import quantize
from ..output import human_bytes
from ..planning.size import predict_size
from ..planning.source import from_gguf
from ..quants import parse_quant
from ..sources.gguf import read as read_gguf
from ..sources.texts import default_text
from ..system import default_threads
from .allocate import Allocation
from .sensitivity import load_json
from .speedcap import SPREAD_BUSY, VERIFY_TIMING, time_types


@dataclass
class Row:
    label: str
    path: str
    size_bytes: int
    bits_per_weight: float
    kld_mean: float | None
    delta_ppl_pct: float | None
    top1_pct: float | None
    tuned: bool = False
    predicted_kld: float | None = None
    pp_tps: float | None = None  # measured here, interleaved with the other rows' files (llama-bench)
    tg_tps: float | None = None
    speed_spread: float | None = None  # the wider of its pp and tg rounds' (max − min) ÷ median


def verify(tc: Any, f16: Path, dst: Path, imatrix: Path, work: Path, stem: str, stock: tuple[str, ...],
            eval_text: str | Path | None, eval_tokens: int, alloc: Allocation, threads: int | None, progress: bool,
            size: int, also: str | None = None, device: str = "cpu") -> list[Row]:
    """KLD, ΔPPL and top-1 of the tuned file and the stock recipes (same imatrix) on the evaluation text: those
    either side of its size, and ``also`` (the stock recipe its speed floor was held to, wherever its size fell)."""
    from ..quality import load_text, perplexity  # here: the quality package loads numpy
    from ..quality.models import gguf_ref

    names = bracket(f16, stock, size)
    names += [also] if also and also not in names else []
    stock_files = [(q, _stock(tc, f16, imatrix, work, stem, q, threads)) for q in names]
    text, src = load_text(eval_text) if eval_text else default_text()
    # A stock file's scores depend on it and the text alone: measured once per work folder, text and length,
    # so a second budget scores only the F16 reference and the new file.
    cache_path = work / f"verify-{hashlib.sha256(text.encode()).hexdigest()[:16]}-{eval_tokens}.json"
    cached: dict[str, dict[str, Any]] = load_json(cache_path) or {}
    todo = [p for _, p in stock_files if p.name not in cached]
    ref = gguf_ref(f16)
    res = perplexity([ref, gguf_ref(dst), *[gguf_ref(p) for p in todo]], text, src, reference=ref, ctx=512,
                     max_tokens=eval_tokens, threads=threads or default_threads(), progress=progress,
                     device=device)
    scores = {Path(r.model.path).name: {"kld_mean": r.kld_mean, "delta_ppl_pct": r.delta_ppl_pct, "top1_pct": r.top1_pct}
              for r in res.rows}
    if todo:
        write_json_atomic(cache_path, {**cached, **{p.name: scores[p.name] for p in todo}})
    scores = {**cached, **scores}
    files = [("tuned", dst, True), *[(f"{q} (imatrix)", p, False) for q, p in stock_files]]
    speeds = time_types({p.name: p for _, p, _ in files}, set(), work / "verify-speeds.json", threads, device,
                        VERIFY_TIMING)
    rows = []
    for label, path, tuned in files:
        r = scores[path.name]
        info = read_gguf(path)
        sp = speeds[path.name]
        rows.append(Row(label, str(path), info.file_size_bytes, info.bits_per_weight, r["kld_mean"],
                        r["delta_ppl_pct"], r["top1_pct"], tuned, alloc.predicted_kld if tuned else None,
                        round(1 / sp.pp_s, 1), round(1 / sp.tg_s, 2), round(sp.spread, 3)))
    return sorted(rows, key=lambda r: r.size_bytes)


def bracket(f16: Path, ladder: tuple[str, ...], size: int) -> list[str]:
    """The stock recipes of ``ladder`` either side of a file of ``size`` bytes: the largest smaller one and the
    smallest at least as large (within 1%), by the plan's byte-exact size of each.  Only those two are made and
    scored: on a 0.5B model each further row costs a quantization and a pass over the evaluation text (~80 s)."""
    spec = from_gguf(f16)
    sizes = sorted((predict_size(spec, q).file_size_bytes, q) for q in ladder)
    below = [q for s, q in sizes if s < size * 0.99]
    above = [q for s, q in sizes if s >= size * 0.99]
    return below[-1:] + above[:1]


def _stock(tc: Any, f16: Path, imatrix: Path, work: Path, stem: str, q: str, threads: int | None) -> Path:
    path = work / f"{stem}-{q}-imat.gguf"  # with the imatrix: beside the per-type files, made once
    if not path.exists():
        quantize(tc, f16, path, parse_quant(q), threads=threads, extra_args=["--imatrix", str(imatrix)])
    return path


def verdict(rows: list[Row]) -> str:
    """One sentence: does the tuned file beat the stock recipes of about its size (by KLD at no larger size)?"""
    tuned = next(r for r in rows if r.tuned)
    bigger = [r for r in rows if not r.tuned and r.size_bytes >= tuned.size_bytes * 0.99]
    smaller = [r for r in rows if not r.tuned and r.size_bytes < tuned.size_bytes * 0.99]
    tk = tuned.kld_mean or 0.0
    parts = []
    if bigger:
        b = min(bigger, key=lambda r: r.size_bytes)
        ratio = tk / b.kld_mean if b.kld_mean else float("nan")
        parts.append(f"{'beats' if tk < (b.kld_mean or 0) else 'does NOT beat'} {b.label} "
                     f"({human_bytes(b.size_bytes)}, KLD {_g(b.kld_mean)}): {ratio:.2f}× its KLD at "
                     f"{tuned.size_bytes / b.size_bytes:.2f}× its size{_speed(tuned, b)}")
    if smaller:
        s = max(smaller, key=lambda r: r.size_bytes)
        parts.append(f"{s.label} is smaller ({human_bytes(s.size_bytes)}) with KLD {_g(s.kld_mean)}")
    spread = max((r.speed_spread or 0.0 for r in rows), default=0.0)
    if spread > SPREAD_BUSY:
        parts.append(f"a file's timing rounds spread {spread:.0%} (a busy or drifting machine; the files were timed "
                     "interleaved): the speed ratios are good to about that")
    return f"The tuned file ({human_bytes(tuned.size_bytes)}, KLD {_g(tuned.kld_mean)}) " + "; ".join(parts) + "."


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _speed(tuned: Row, stock: Row) -> str:
    if not (tuned.pp_tps and tuned.tg_tps and stock.pp_tps and stock.tg_tps):
        return ""
    return f", {tuned.pp_tps / stock.pp_tps:.2f}× its pp and {tuned.tg_tps / stock.tg_tps:.2f}× its tg (measured here)"
