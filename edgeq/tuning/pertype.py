"""The per-type files: the F16 file quantized once per candidate type (``--pure``, with the importance matrix).

A tensor whose rows fit no block of a type gets llama-quantize's fallback (on rows of 896, every K- and
IQ-type falls back to a 32-block type), and that fallback is itself a candidate with its own file, where the
tensor has the very same bytes.  Quantizing it again in every K/IQ file cost most of the stage on a
Qwen2.5-0.5B (only its ``ffn_down`` rows fit 256-blocks), so such tensors are written as Q8_0 there
(fast, and always made), and the type llama-quantize would have given them is recorded beside the file:
``types_of`` gives the file's types as llama-quantize would have written them.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from ..files import atomic_output, write_json_atomic
from ..llamacpp.quantize import quantize
from ..output import Progress
from ..planning.size import fallback_type
from ..quants import parse_quant
from ..sources.gguf_header import gguf_constants, read_header
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


def holders(per_type: dict[str, Path]) -> dict[tuple[str, str], Path]:
    """{(tensor, type): a per-type file whose bytes for that tensor are that type's}, the type's own file first
    (a fallback lies both in its own file and in the file of the type that fell back to it: the same bytes)."""
    out: dict[tuple[str, str], Path] = {}
    tables = {kind: read_header(path).tensors for kind, path in sorted(per_type.items())}
    for own in (True, False):
        for kind, tensors in tables.items():
            for t in tensors:
                if (t.type == kind) == own:
                    out.setdefault((t.name, t.type), per_type[kind])
    return out


def splice(base: Path, parts: dict[str, Path], dst: Path) -> None:
    """Write ``dst``: ``base``'s metadata and tensor order, each tensor's type and bytes copied from the file
    ``parts`` names for it (``base`` where it names none).

    llama-quantize writes a tensor the same bytes whatever the rest of the file holds (its type and the
    importance matrix decide them), so a mix of per-type files' tensors is, tensor for tensor, the file a
    ``--tensor-type-file`` quantization from F16 would write, without quantizing anything again: six probes of a
    0.5B model took 29 s of llama-quantize, and a splice takes a copy.  Only the metadata's ``file_type``
    still names the base's type: llama.cpp computes with each tensor's own.
    """
    head = read_header(base)
    qtypes = gguf_constants().GGMLQuantizationType
    sources = {p: read_header(p) for p in {base, *parts.values()}}
    chosen = []
    for t in head.tensors:
        src = parts.get(t.name, base)
        entry = next(e for e in sources[src].tensors if e.name == t.name)
        if entry.shape != t.shape:
            raise ValueError(f"{src} has {t.name} as {entry.shape}, {base} as {t.shape}")
        chosen.append((entry, src))
    align = head.alignment
    with atomic_output(dst) as tmp, open(tmp, "wb") as out:
        with open(base, "rb") as f:  # magic, version, counts and every metadata key, as they are
            out.write(f.read(head.table_offset_bytes))
        offset = 0
        for e, _ in chosen:
            name = e.name.encode()
            out.write(struct.pack(f"<Q{len(name)}sI{len(e.shape)}QIQ", len(name), name, len(e.shape), *e.shape,
                                  qtypes[e.type].value, offset))
            offset += -(-e.n_bytes // align) * align
        out.write(bytes(-out.tell() % align))
        files = {p: open(p, "rb") for p in sources}
        try:
            for e, src in chosen:
                f = files[src]
                f.seek(sources[src].data_offset_bytes + e.offset)
                out.write(f.read(e.n_bytes))
                out.write(bytes(-e.n_bytes % align))
        finally:
            for f in files.values():
                f.close()
