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
    .venv/bin/python benchmarks/convert_memory.py --render   # the docs table again from the JSON, nothing re-run

Writes ``benchmarks/results/convert_memory.json`` (the rows of models not measured this time are kept from the
last run's file, so a 1.5B run adds to a 0.5B one) and the table between the ``convert-memory`` markers of
``docs/benchmarks/convert-memory.md``.
"""
from __future__ import annotations

import argparse
import json
import platform
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
from edgeq.system import cpu_name

RESULTS = config.REPO_DIR / "benchmarks" / "results" / "convert_memory.json"

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


def measure(name: str, ckpt: Path, work: Path, lazy: bool) -> dict[str, object]:
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
    for f in out.glob("*.gguf"):
        f.unlink()  # keep the disk footprint of the benchmark small
    return {"model": name, "mode": "lazy" if lazy else "--no-lazy", "checkpoint_bytes": checkpoint_bytes(ckpt),
            "peak_rss_bytes": peak or 0, "private_bytes": private.peak_bytes, "seconds": round(seconds, 1),
            "date": time.strftime("%Y-%m-%d")}


def render(data: dict) -> str:
    """The docs table: one row per model, each figure beside its ratio to the checkpoint's size."""
    by = {(r["model"], r["mode"]): r for r in data["rows"]}
    models = list(dict.fromkeys(r["model"] for r in data["rows"]))

    def cell(r: dict | None, key: str) -> str:
        return f"{human_bytes(r[key])} ({r[key] / r['checkpoint_bytes']:.2f}×)" if r else "—"

    dates = sorted({r["date"] for r in data["rows"]})  # rows kept from earlier runs carry their own date
    lines = [f"{data['machine']['cpu']}, measured {' and '.join(dates)}.", "",
             "| model | checkpoint | lazy: peak RSS | lazy: private | `--no-lazy`: peak RSS | `--no-lazy`: private |",
             "|---|---|---|---|---|---|"]
    for m in models:
        lazy, eager = by.get((m, "lazy")), by.get((m, "--no-lazy"))
        size = (lazy or eager or {}).get("checkpoint_bytes", 0)
        lines.append(f"| {m} | {human_bytes(size)} | {cell(lazy, 'peak_rss_bytes')} | {cell(lazy, 'private_bytes')} | "
                     f"{cell(eager, 'peak_rss_bytes')} | {cell(eager, 'private_bytes')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="embedded,qwen2.5-0.5b",
                    help=f"Comma-separated: embedded, {', '.join(SHAPES)} (default: %(default)s).")
    ap.add_argument("--no-eager", action="store_true", help="Skip the --no-lazy comparison runs.")
    ap.add_argument("--workdir", type=Path, help="Where to put the 0.5B checkpoint and outputs (default: a temp dir).")
    ap.add_argument("--json", type=Path, default=RESULTS)
    ap.add_argument("--render", action="store_true", help="only the docs table again, from --json's file")
    args = ap.parse_args()
    sys.path.insert(0, str(config.REPO_DIR / "benchmarks"))
    from readme_table import publish

    if args.render:
        publish("convert-memory", render(json.loads(args.json.read_text())))
        return
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
            print(rows[-1], file=sys.stderr, flush=True)
    print_table("HF → F16 GGUF: converter memory vs checkpoint size",
                ["model", "mode", "checkpoint", "peak RSS", "RSS/ckpt", "peak private", "private/ckpt", "s"],
                [[r["model"], r["mode"], human_bytes(r["checkpoint_bytes"]), human_bytes(r["peak_rss_bytes"]),
                  f"{r['peak_rss_bytes'] / r['checkpoint_bytes']:.2f}", human_bytes(r["private_bytes"]),
                  f"{r['private_bytes'] / r['checkpoint_bytes']:.2f}", f"{r['seconds']:.0f}"] for r in rows])
    old = json.loads(args.json.read_text())["rows"] if args.json.exists() else []
    kept = [r for r in old if r["model"] not in models]  # other models' rows: an earlier run's, kept
    data = {"machine": {"cpu": cpu_name(), "arch": platform.machine()}, "rows": kept + rows}
    args.json.write_text(json.dumps(data, indent=1) + "\n")
    publish("convert-memory", render(data))


if __name__ == "__main__":
    main()
