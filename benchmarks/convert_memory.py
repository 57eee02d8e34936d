"""Peak memory of HF → GGUF conversion, against the checkpoint's size.

edgeq runs the vendored converter in its default lazy mode: tensors are read one
at a time from the memory-mapped safetensors and written out, so memory should
stay well under the checkpoint's size.  This script measures it on the embedded
SmolLM2-135M (fp32 safetensors) and on a model with Qwen2.5-0.5B's exact shapes
(random bf16 weights, made on the fly with Qwen2's real tokenizer), lazy (what
``edgeq convert`` runs) and ``--no-lazy`` (what it avoids).

Two figures per run:
- peak RSS: the converter's own high-water mark (VmHWM, sampled; what ``edgeq convert
  --json`` reports as ``convert_peak_rss_bytes``).  It counts pages of the
  memory-mapped checkpoint the process touched, which the kernel can drop at will.
- peak private: the largest RSS minus shared/file-backed pages, sampled every
  20 ms (psutil): memory that cannot be reclaimed without swapping.

    .venv/bin/python benchmarks/convert_memory.py            # both models, lazy and --no-lazy
    .venv/bin/python benchmarks/convert_memory.py --models qwen2.5-1.5b --no-eager
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from edgeq import config
from edgeq.conversion import convert
from edgeq.llamacpp import find_toolchain, run_tool
from edgeq.output import human_bytes, print_table
from edgeq.sources.embedded import ensure_embedded_model

_QWEN25 = dict(vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
               num_key_value_heads=2, tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151643)
# Qwen2.5 configs (config.json on the Hub); 1.5B shows how the figures scale.
SHAPES = {
    "qwen2.5-0.5b": dict(_QWEN25, hidden_size=896, num_hidden_layers=24, num_attention_heads=14, intermediate_size=4864),
    "qwen2.5-1.5b": dict(_QWEN25, hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, intermediate_size=8960),
}


class PrivatePeak:
    """Samples this process's children: the largest RSS minus shared (file-backed) pages."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s, self.peak_bytes, self._stop = interval_s, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            for child in me.children(recursive=True):
                try:
                    m = child.memory_info()
                    self.peak_bytes = max(self.peak_bytes, m.rss - getattr(m, "shared", 0))
                except psutil.Error:
                    pass
            time.sleep(self.interval_s)

    def __enter__(self) -> PrivatePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_qwen(dest: Path, shape: str) -> Path:
    """A Qwen2.5 model's shapes with random bf16 weights and Qwen2's tokenizer (from llama.cpp's vocab GGUF)."""
    import torch
    import transformers

    if (dest / "model.safetensors").exists():
        return dest
    tok = transformers.AutoTokenizer.from_pretrained(config.llama_dir() / "models", gguf_file="ggml-vocab-qwen2.gguf")
    cfg = transformers.Qwen2Config(**SHAPES[shape])
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # build in bf16 directly: half the memory of fp32 then cast
    try:
        model = transformers.Qwen2ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(torch.float32)
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


def checkpoint_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def measure(name: str, ckpt: Path, work: Path, lazy: bool) -> list[object]:
    out = work / f"{name}-{'lazy' if lazy else 'eager'}"
    t0 = time.perf_counter()
    with PrivatePeak() as private:
        if lazy:  # exactly what `edgeq convert` runs
            peak = convert(str(ckpt), quants=["F16"], outdir=out, force=True, progress=False).convert_peak_rss_bytes
        else:
            tc = find_toolchain()
            out.mkdir(parents=True, exist_ok=True)
            peak = run_tool([sys.executable, tc.converter, ckpt, "--outfile", out / "model-F16.gguf",
                             "--outtype", "f16", "--no-lazy"], name="convert_hf_to_gguf.py").peak_rss_bytes
    seconds = time.perf_counter() - t0
    size = checkpoint_bytes(ckpt)
    for f in out.glob("*.gguf"):
        f.unlink()  # keep the disk footprint of the benchmark small
    return [name, "lazy" if lazy else "--no-lazy", human_bytes(size), human_bytes(peak or 0),
            f"{(peak or 0) / size:.2f}", human_bytes(private.peak_bytes), f"{private.peak_bytes / size:.2f}",
            f"{seconds:.0f}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="embedded,qwen2.5-0.5b",
                    help=f"Comma-separated: embedded, {', '.join(SHAPES)} (default: %(default)s).")
    ap.add_argument("--no-eager", action="store_true", help="Skip the --no-lazy comparison runs.")
    ap.add_argument("--workdir", type=Path, help="Where to put the 0.5B checkpoint and outputs (default: a temp dir).")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgeq-convert-memory-"))
    models = {}
    for m in args.models.split(","):
        if m == "embedded":
            models["SmolLM2-135M (fp32)"] = ensure_embedded_model(config.REPO_DIR / "models")
        else:
            models[f"{m} shapes (bf16)"] = make_qwen(work / f"{m}-random", m)
    rows = []
    for name, ckpt in models.items():
        for lazy in (True,) if args.no_eager else (True, False):
            rows.append(measure(name, ckpt, work, lazy))
            print(" | ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
    print_table("HF → F16 GGUF: converter memory vs checkpoint size",
                ["model", "mode", "checkpoint", "peak RSS", "RSS/ckpt", "peak private", "private/ckpt", "s"], rows)


if __name__ == "__main__":
    main()
