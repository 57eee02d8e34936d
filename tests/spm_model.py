"""A SentencePiece ``tokenizer.model`` written from one of llama.cpp's vocab-only GGUFs, for the converters that
read SentencePiece (Gemma, Phi-3, Llama-SPM) in the architecture matrix (``archmatrix``)."""
from __future__ import annotations

import functools
import struct
from pathlib import Path
from typing import Any


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:  # a length-delimited protobuf field
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _int_field(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(value)


def write_sentencepiece_model(vocab_gguf: Path, dest: Path) -> None:
    """A SentencePiece ``ModelProto`` with the GGUF's pieces, scores and token types (the GGUF's types use
    SentencePiece's numbering: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).  Written
    by hand (a dozen protobuf fields) rather than adding protobuf for one test helper."""
    dest.write_bytes(_model_bytes(vocab_gguf))


@functools.cache
def _model_bytes(vocab_gguf: Path) -> bytes:
    # Once per vocabulary in a process: GGUFReader takes 1.3-1.5 s over a 32k-token vocabulary, which five cases
    # of the architecture matrix share.
    from gguf import GGUFReader

    r = GGUFReader(vocab_gguf)

    def values(key: str) -> list[Any]:
        f = r.fields[key]
        return [f.contents(i) for i in range(len(f.data))]

    tokens, scores, types = (values(f"tokenizer.ggml.{k}") for k in ("tokens", "scores", "token_type"))
    # SentencePiece allows one unknown piece; vocabularies with added tokens (Phi-3's placeholders) mark more.
    unk = int(r.fields["tokenizer.ggml.unknown_token_id"].contents()) if "tokenizer.ggml.unknown_token_id" in r.fields else 0
    types = [4 if ty == 2 and i != unk else ty for i, ty in enumerate(types)]
    model = b"".join(_field(1, _field(1, str(t).encode()) + b"\x15" + struct.pack("<f", float(s))
                            + _int_field(3, int(ty))) for t, s, ty in zip(tokens, scores, types))
    # TrainerSpec: model_type BPE (2) as Llama's and Gemma's are, vocab_size, byte_fallback; ids as the vocab has them.
    trainer = _int_field(3, 2) + _int_field(4, len(tokens)) + _varint(35 << 3) + b"\x01"
    for num, key in ((40, "unknown_token_id"), (41, "bos_token_id"), (42, "eos_token_id")):
        if f"tokenizer.ggml.{key}" in r.fields:
            trainer += _int_field(num, int(r.fields[f"tokenizer.ggml.{key}"].contents()))
    normalizer = _field(1, b"identity") + _int_field(3, 1) + _int_field(4, 0) + _int_field(5, 1)
    return model + _field(2, trainer) + _field(3, normalizer)
