"""The second file of a vision-language model: its multimodal projector (image encoder + projection), which the
vendored converter writes with ``--mmproj`` and llama.cpp's libmtmd loads beside the text model.

The projector is made in F16 and in Q8_0, the one quantized type the converter writes for it (``llama-quantize``
refuses a projector: it only knows text architectures).  Both are recorded in the manifest with the role
``projector``; every text model of the folder names the F16 one as its projector, so ``run --image``, ``bench``,
``plan``, ``ship``, ``upload`` and ``bundle`` find it from the model alone.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from .. import manifest
from ..errors import ToolFailed
from ..files import atomic_output, safe_name
from ..llamacpp import Toolchain, run_tool
from ..llamacpp.quantize import what_failed
from ..output import Progress
from ..quants import parse_quant
from ..sources import checkpoint
from ..sources import gguf as gguf_info
from . import steps
from .recorder import TailHash

# F16: what llama.cpp's own published projectors use (lossless for a BF16/F16 checkpoint's vision tower);
# Q8_0: the converter's own quantization, about half the size.  The text models pair with the F16 one.
PROJECTOR_TYPES = ("F16", "Q8_0")
PAIRED_TYPE = "F16"
ROLE = "projector"


def projector_name(stem: str, qtype: str) -> str:
    """llama.cpp's naming: ``mmproj-<Name>-F16.gguf``; the prefix keeps it out of a folder's list of models."""
    return f"mmproj-{safe_name(stem)}-{qtype}.gguf"


def make_projectors(tc: Toolchain, ck: checkpoint.Checkpoint, out: Path, stem: str, src_info: dict[str, object],
                    mf: manifest.Manifest, old: manifest.Manifest | None, *, script: str,
                    progress: bool) -> list[tuple[str, Path, float, bool]]:
    """Write (or reuse) each projector type, record it in ``mf`` and pair the folder's text models with the F16 one.
    ``script``: the Python that runs the converter (the pipeline's, without remote code).

    Returns (type, path, seconds, reused) per projector."""
    made = []
    for qtype in PROJECTOR_TYPES:
        path = out / projector_name(stem, qtype)
        recipe = steps.recipe(src_info, tc, "mmproj", qtype)
        if manifest.is_current(out, old, path.name, recipe):
            assert old is not None
            mf.files[path.name] = old.files[path.name]
            made.append((qtype, path, 0.0, True))
            continue
        t0 = time.perf_counter()
        digest = _convert(tc, ck, path, qtype, script, progress)
        info = gguf_info.read(path)
        rec = manifest.record(path, qtype, info.bits_per_weight, recipe, sha256=digest)
        rec.role = ROLE
        mf.files[path.name] = rec
        made.append((qtype, path, time.perf_counter() - t0, False))
    pair(mf, projector_name(stem, PAIRED_TYPE))
    return made


def pair(mf: manifest.Manifest, projector: str) -> None:
    """Name ``projector`` as the projector of every text model ``mf`` records."""
    for rec in mf.files.values():
        if rec.role != ROLE:
            rec.projector = projector


def _convert(tc: Toolchain, ck: checkpoint.Checkpoint, dst: Path, qtype: str, script: str,
             progress: bool) -> str | None:
    q = parse_quant(qtype)
    with atomic_output(dst) as tmp, Progress(f"mmproj {q.name}", None, progress) as bar:
        done = 0

        def on_line(line: str) -> None:
            nonlocal done
            if "-->" in line:  # one line per tensor written
                done += 1
                bar.update_to(done)

        follower = TailHash(tmp)
        try:
            run_tool([sys.executable, "-c", script, tc.converter, ck.path, "--mmproj", "--outfile", tmp,
                      "--outtype", q.name.lower()], name="convert_hf_to_gguf.py --mmproj",
                     on_line=on_line)
        except ToolFailed as e:
            raise what_failed(e, tmp, ck.path) from None
        finally:
            digest = follower.finish()
    return digest
