"""The per-type files: the F16 file quantized once per candidate type (``--pure``, with the importance matrix).

A tensor whose rows fit no block of a type gets llama-quantize's fallback (on rows of 896, every K- and
IQ-type falls back to a 32-block type), and that fallback is itself a candidate with its own file, where the
tensor has the very same bytes.  Quantizing it again in every K/IQ file cost most of the stage on a
Qwen2.5-0.5B (only its ``ffn_down`` rows fit 256-blocks), so such tensors are written as Q8_0 there
(fast, and always made), and the type llama-quantize would have given them is recorded beside the file:
``types_of`` gives the file's types as llama-quantize would have written them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..files import atomic_output, write_json_atomic
from ..llamacpp.quantize import quantize
from ..output import Progress
from ..plan.size import fallback_type
from ..quants import parse_quant
from ..sources.gguf_header import read_header
from .sensitivity import LOW_BIT, ftype_for, load_json, tensor_type_rules

WIDE = "Q8_0"  # what a tensor left to another file is written as: cheap, and made for every tune


def make(tc: Any, f16: Path, imatrix: Path, work: Path, stem: str, kinds: list[str], threads: int | None,
         progress: bool) -> dict[str, Path]:
    """{kind: its per-type file}, each made once."""
    out: dict[str, Path] = {}
    header = read_header(f16)
    with Progress("   types", len(kinds), progress) as bar:
        for i, kind in enumerate(kinds):
            dst = work / f"{stem}-pure-{kind}.gguf"
            if not dst.exists():
                _make_one(tc, f16, imatrix, dst, kind, header, set(kinds), threads)
            out[kind] = dst
            bar.update_to(i + 1)
    return out


def types_of(path: Path) -> dict[str, str]:
    """{tensor: its type} in a per-type file, tensors left to another file at the type they would have had."""
    return {**{t.name: t.type for t in read_header(path).tensors}, **elsewhere(path)}


def elsewhere(path: Path) -> dict[str, str]:
    """{tensor: its type} of the tensors a per-type file left to the file of that type."""
    return load_json(_elsewhere(path)) or {}


def _make_one(tc: Any, f16: Path, imatrix: Path, dst: Path, kind: str, header: Any, kinds: set[str],
              threads: int | None) -> None:
    elsewhere = {}
    for t in header.tensors:
        if t.type != "F16" or len(t.shape) < 2 or kind == WIDE:
            continue
        if kind in LOW_BIT and t.name == "token_embd.weight":  # --token-embedding-type decides that one
            continue
        got = fallback_type(kind, t.shape[0])
        if got != kind and got in kinds:
            elsewhere[t.name] = got
    args = ["--pure", "--imatrix", str(imatrix)]
    if kind in LOW_BIT:
        args += ["--token-embedding-type", "q8_0"]
    rules = dst.with_suffix(".elsewhere.txt")
    if elsewhere:
        with atomic_output(rules) as tmp:
            tmp.write_text(tensor_type_rules(dict.fromkeys(elsewhere, WIDE)), encoding="utf-8")
        args += ["--tensor-type-file", str(rules)]
    write_json_atomic(_elsewhere(dst), elsewhere)  # before the file: its existence says the pair is whole
    quantize(tc, f16, dst, parse_quant(ftype_for(kind)), threads=threads, extra_args=args)
    rules.unlink(missing_ok=True)


def _elsewhere(path: Path) -> Path:
    return path.with_suffix(".elsewhere.json")
