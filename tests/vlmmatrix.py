"""Vision-language models (issue 38): tiny random VLMs of two families, converted to a text model and projector
pair by edgeq, proven by logits against transformers fp32.

Shared by ``tests/test_vlm.py`` (which asserts each column) and ``benchmarks/architectures.py`` (which writes the
VLM rows of the README's table from the same checks).

Each case is a transformers VLM config (text: 2-6 layers of hidden 64; vision: 2 layers of hidden 32 on 32x32
images in 8-pixel patches) with the text family's real vocabulary from llama.cpp's vocab GGUFs.  The image is
random pixels at the encoder's own size, so neither engine resizes it and both see the same normalised pixels;
the prompt is what libmtmd makes of "text <image> text" (its text tokens, and each image slice as that many image
tokens), so transformers reads exactly the sequence llama.cpp decodes.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from spm_model import write_sentencepiece_model
from vocab import vocab_tokenizer

from edgeq import config

KLD_MAX = 0.01  # as the text matrix: F16 rounding gives ~1e-5..4e-3 here; a wrong projector tensor gives O(0.1-10)
TIE = 0.1
# The control: the same prompt with another image must move the rows after it by far more than KLD_MAX, or
# the check above could pass with a projector whose output the model ignores (Gemma 3's zero-initialised one).
IMAGE_EFFECT_MIN = 10 * KLD_MAX
SIDE = 32  # pixels: the encoders' image size, so no resize happens in either engine
PROMPT = "Look at this {image} and describe the picture in detail, please."
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512, initializer_range=0.5)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=SIDE,
              patch_size=8)
NORM = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@dataclass(frozen=True)
class Case:
    family: str
    model: str  # the transformers class (the HF architecture)
    vocab: str
    covers: str
    spm: bool = False
    extra_text: dict[str, Any] = field(default_factory=dict)


CASES: dict[str, Case] = {
    "smolvlm (idefics3)": Case("idefics3", "Idefics3ForConditionalGeneration", "llama-bpe",
                               "SigLIP-style encoder, pixel-shuffle connector; an overview and a tile per image"),
    "gemma3 (vision)": Case("gemma3", "Gemma3ForConditionalGeneration", "llama-spm",
                            "SigLIP encoder, pooled RMS-normed projector; image tokens attend both ways", spm=True,
                            extra_text={"num_hidden_layers": 6, "head_dim": 16, "query_pre_attn_scalar": 16,
                                        "sliding_window": 8}),
}


def make_model(dest: Path, case: Case) -> Any:
    """Save a random VLM of ``case`` (weights, tokenizer, preprocessor config) to ``dest``; return it in fp32."""
    import torch
    import transformers

    tok = vocab_tokenizer(case.vocab)
    torch.manual_seed(0)
    if case.family == "idefics3":
        tok = _with_tokens(tok, ["<fake_token_around_image>", "<image>", "<global-img>", "<row_1_col_1>"])
        tok.chat_template = CHATML  # run --chat applies it (llama.cpp recognises ChatML by its markers)
        # SmolVLM's checkpoints name their text model VLlama3ForCausalLM, which the converter reads as Llama.
        text = {**TEXT, "vocab_size": len(tok), "architectures": ["VLlama3ForCausalLM"]}
        cfg = transformers.Idefics3Config(text_config=text, vision_config={**VISION, "initializer_range": 0.5},
                                          image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2)
        model = transformers.Idefics3ForConditionalGeneration(cfg)
        pre = {"image_processor_type": "Idefics3ImageProcessor", "size": {"longest_edge": SIDE},
               "max_image_size": {"longest_edge": SIDE}, **NORM}
    else:
        n = len(tok)
        text = {**TEXT, **case.extra_text, "vocab_size": n}
        cfg = transformers.Gemma3Config(text_config=text, vision_config=VISION, mm_tokens_per_image=4,
                                        image_token_index=n - 1, boi_token_index=n - 2, eoi_token_index=n - 3,
                                        initializer_range=0.5)
        model = transformers.Gemma3ForConditionalGeneration(cfg)
        with torch.no_grad():  # zero-initialised, so the image would not reach the text model at all
            model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.7)
        pre = {"image_processor_type": "Gemma3ImageProcessor", "image_seq_length": 4,
               "size": {"height": SIDE, "width": SIDE}, **NORM}
    model = model.to(torch.float32).eval()
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    (dest / "preprocessor_config.json").write_text(json.dumps(pre))
    if case.spm:
        write_sentencepiece_model(config.llama_dir() / "models" / f"ggml-vocab-{case.vocab}.gguf",
                                  dest / "tokenizer.model")
    if case.family == "gemma3":
        _gemma3_checkpoint_names(dest / "model.safetensors")
    return model


def _with_tokens(tok: Any, tokens: list[str]) -> Any:
    import copy

    tok = copy.deepcopy(tok)  # vocab_tokenizer's is shared by every case
    tok.add_special_tokens({"additional_special_tokens": tokens})
    return tok


def _gemma3_checkpoint_names(path: Path) -> None:
    """Gemma 3's checkpoints keep the vision tower under ``vision_tower.vision_model.``; transformers 5 saves it
    one level up, which the converter cannot map.  Written as Google's checkpoints name it."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    renamed = {f"vision_tower.vision_model.{k.removeprefix('vision_tower.')}"
               if k.startswith("vision_tower.") and not k.startswith("vision_tower.vision_model.") else k: v
               for k, v in tensors.items()}
    save_file(renamed, path, metadata={"format": "pt"})


def write_image(path: Path, seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(path)
    return path


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def kld(p_log: np.ndarray, q_log: np.ndarray) -> np.ndarray:
    return (np.exp(p_log) * (p_log - q_log)).sum(-1)


def llama_rows(model: Path, mmproj: Path, images: list[Path]) -> list[tuple[list[tuple[str, Any]], np.ndarray]]:
    """For each image: libmtmd's layout of the prompt, and llama.cpp's log-probabilities at every text token.
    Runs in a child (``logits_child``): a native crash fails the row, not the test process."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgeq-vlm-") as folder:  # the child's .npy files, gone after
        req = json.dumps({"model": str(model), "mmproj": str(mmproj), "images": [str(i) for i in images],
                          "folder": folder})
        out = subprocess.run([sys.executable, str(Path(__file__).with_name("vlm_logits_child.py"))], input=req,
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"the logits child failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
        res = json.loads(out.stdout.strip().splitlines()[-1])
        return [(r["layout"], np.load(r["npy"])) for r in res]


def hf_rows(model: Any, family: str, layout: list[tuple[str, Any]], image: Path) -> tuple[np.ndarray, int]:
    """transformers fp32 log-probabilities at the same text positions; and how many of them follow the image."""
    import torch
    from PIL import Image

    image_id = model.config.image_token_id
    ids: list[int] = []
    for kind, v in layout:
        ids += v if kind == "text" else [image_id] * v
    px = (np.asarray(Image.open(image).convert("RGB"), np.float32) / 255 - NORM["image_mean"]) / NORM["image_std"]
    pv = torch.tensor(px, dtype=torch.float32).permute(2, 0, 1)
    n_slices = sum(kind == "image" for kind, _ in layout)
    kw: dict[str, Any] = {}
    if family == "idefics3":  # the overview and the tile are both the whole 32x32 image
        kw["pixel_values"] = pv[None, None].repeat(1, n_slices, 1, 1, 1)
    else:
        kw["pixel_values"] = pv[None].repeat(n_slices, 1, 1, 1)
        kw["token_type_ids"] = torch.tensor([[int(t == image_id) for t in ids]])  # bidirectional image block
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), **kw).logits[0].double().numpy()
    text_at = [i for i, t in enumerate(ids) if t != image_id]
    first_image = ids.index(image_id)
    return log_softmax(logits[text_at]), sum(i > first_image for i in text_at)


def check(name: str, work: Path) -> dict[str, Any]:
    """Every column of one VLM row: conversion of the pair, logits against HF, the image's effect, run --image."""
    from edgeq.conversion import convert

    case, t0 = CASES[name], time.monotonic()
    row: dict[str, Any] = {"architecture": name, "hf_class": case.model, "tokenizer": case.vocab, "covers": case.covers}
    try:
        model = make_model(work / "hf", case)
        res = convert(str(work / "hf"), quants=["F16"], outdir=work / "out", progress=False)
    except Exception as e:
        row.update(converts=False, error=_last_line(e))
        return row
    f16 = next(Path(o.path) for o in res.outputs if o.type == "F16")
    proj = {o.type: Path(o.path) for o in res.projectors}
    row["converts"] = set(proj) == {"F16", "Q8_0"}
    row["projector_types"] = sorted(proj)
    from edgeq.sources.gguf_header import read_header

    row["gguf_arch"] = str(read_header(f16).metadata.get("general.architecture"))
    row["projector_type"] = str(read_header(proj["F16"]).metadata.get("clip.projector_type"))
    images = [write_image(work / "a.png", 0), write_image(work / "b.png", 1)]
    try:
        (layout, got), (_, other) = llama_rows(f16, proj["F16"], images)
        ref, after = hf_rows(model, case.family, layout, images[0])
    except Exception as e:
        row["error"] = _last_line(e)
        return row
    d = kld(ref, got)
    top = np.sort(ref, -1)[:, -2:]
    decided = top[:, 1] - top[:, 0] > TIE
    row["image_tokens"] = sum(v for kind, v in layout if kind == "image")
    row["kld_max"] = float(d.max())
    row["kld_after_image_max"] = float(d[-after:].max())
    row["top1_match"] = bool((ref.argmax(-1) == got.argmax(-1))[decided].all())
    row["image_effect_max"] = float(kld(got, other)[-after:].max())
    row["logits_match"] = row["kld_max"] < KLD_MAX and row["top1_match"] and row["image_effect_max"] > IMAGE_EFFECT_MIN
    row["pair"] = {"F16": str(f16), "mmproj": str(proj["F16"]), "mmproj_q8": str(proj["Q8_0"])}
    row["seconds"] = round(time.monotonic() - t0, 1)
    return row


def passes(row: dict[str, Any]) -> bool:
    return bool(row.get("converts") and row.get("logits_match") and not row.get("error"))


def _last_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(e).__name__)[:300]
