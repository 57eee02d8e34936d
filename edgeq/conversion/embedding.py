"""A sentence-embedding checkpoint's head, carried into its float GGUF (and from there into every quant).

The vendored converter writes the pooling type a sentence-transformers checkpoint declares, and nothing of its
``Normalize`` module or ``max_seq_length``; edgeq adds those two under ``edgeq.embedding`` (``sources.sentence``).
``llama-quantize`` copies every key of its input, so the quantized files carry them too.  The float file is
rewritten once with the added keys (gguf-py's own metadata copier), before it is renamed into place.
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from ..errors import SourceError
from ..sources.gguf_header import read_header
from ..sources.sentence import KEY_MAX_SEQ, KEY_NORMALIZE, EmbeddingHead, gguf_head


def carry_head(path: Path, head: EmbeddingHead, checkpoint: Path) -> None:
    """Check the converter wrote ``head``'s pooling into ``path`` and add its normalisation and sequence length.

    A pooling other than the checkpoint's (a converter that read the config differently) fails loudly: the
    file's vectors would not be the model's."""
    written = gguf_head(read_header(path).metadata)
    if written is None or written.pooling != head.pooling:
        got = f"{written.pooling} pooling" if written else "no pooling type"
        raise SourceError(f"the converter wrote {got} but {checkpoint.name} declares {head.pooling} pooling "
                          "(1_Pooling/config.json).", hint="Report this with the checkpoint's modules.json; "
                          "nothing was written.")
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    added = {KEY_NORMALIZE: MetadataDetails(gguf.GGUFValueType.BOOL, head.normalize)}
    if head.max_seq_length:
        added[KEY_MAX_SEQ] = MetadataDetails(gguf.GGUFValueType.UINT32, head.max_seq_length)
    reader = gguf.GGUFReader(path, "r")
    arch = str(reader.fields["general.architecture"].contents())
    tmp = path.with_name(path.name + ".head")
    try:
        writer = gguf.GGUFWriter(tmp, arch=arch, endianess=reader.endianess)
        with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar: convert draws its own progress
            copy_with_new_metadata(reader, writer, added, [])
        del reader  # its memory map, before the file under it is replaced
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


__all__ = ["carry_head"]
