"""The architecture matrix's adapter row (issue 38): a tiny random Llama and a random PEFT LoRA, through edgeq.

Shared by ``tests/test_lora.py`` (which asserts the row and more) and ``benchmarks/architectures.py`` (which
adds the row to the table), so the table is what the test saw.

The base is the matrix's Llama shape (hidden 64, 2 layers, weights drawn with ``initializer_range`` 0.5) with
SmolLM2's real tokenizer; the adapter is rank 4 on every projection, with lora_A and lora_B drawn at std 0.3
(PEFT starts lora_B at zero, an adapter that changes nothing and so proves nothing).  The reference is PEFT's
own merged model in fp32: the adapter applied at load time (``--lora``) and the model merged by edgeq
(``--merge-lora``) must both match it, within the matrix's F16 bound, while the bare base must not.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from archmatrix import BASE, EVAL_TEXT, KLD_MAX, QUANTS, TEXT, THREADS, _cli, _last_line, _plan_sizes_exact, log_softmax

NAME = "llama + LoRA adapter"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK, ALPHA = 4, 8.0
# The bare base must sit this far beyond the bound from PEFT's merged model, or the adapter proves nothing.
ADAPTER_EFFECT = 20 * KLD_MAX


@dataclass
class LoraCase:
    base: Path  # the HF checkpoint
    adapter: Path  # the PEFT folder
    ids: list[int]
    merged_ref: np.ndarray  # PEFT's merged model: fp32 log-probs of ``ids``
    base_ref: np.ndarray  # the bare base's
    f16: Path  # convert --lora: the base's F16 GGUF
    lora: Path  # ... and the adapter GGUF
    merged: dict[str, Path]  # convert --merge-lora: the merged model's F16, Q8_0, Q4_K_M
    work: Path


def make_base(dest: Path, tokenizer_from: Path, **config: Any) -> Any:
    """The matrix's tiny Llama with the tokenizer of ``tokenizer_from``, saved to ``dest``; the model in fp32."""
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tokenizer_from)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
                                   **{**BASE, **config})
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).to(torch.float32).eval()
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return model


def make_adapter(model: Any, dest: Path, *, targets: list[str] = TARGETS, seed: int = 1) -> Any:
    """A random PEFT LoRA on ``model`` (changed in place), saved to ``dest``; returns the PEFT model."""
    import peft
    import torch

    cfg = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=targets, lora_dropout=0.0,
                          init_lora_weights=False)
    pm = peft.get_peft_model(model, cfg)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.3)
    pm.save_pretrained(dest)
    return pm


def fp32_logprobs(model: Any, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(out, -1).numpy().astype(np.float64)


def build(work: Path, tokenizer_from: Path, *, merged_quants: tuple[str, ...] = QUANTS) -> LoraCase:
    """Base, adapter and references, then ``convert --lora`` and ``convert --merge-lora`` through the library."""
    import transformers

    from edgeq.conversion import convert

    model = make_base(work / "tiny-base", tokenizer_from)
    ids = transformers.AutoTokenizer.from_pretrained(work / "tiny-base")(TEXT, add_special_tokens=False)["input_ids"][:32]
    base_ref = fp32_logprobs(model, ids)
    pm = make_adapter(model, work / "tiny-adapter")
    merged_ref = fp32_logprobs(pm.merge_and_unload(), ids)
    with_lora = convert(str(work / "tiny-base"), quants=["F16"], outdir=work / "base-out", progress=False,
                        lora=str(work / "tiny-adapter"))
    merged = convert(str(work / "tiny-base"), quants=list(merged_quants), outdir=work / "merged-out", progress=False,
                     merge_lora=str(work / "tiny-adapter"))
    assert with_lora.adapter is not None
    return LoraCase(work / "tiny-base", work / "tiny-adapter", ids, merged_ref, base_ref,
                    Path(with_lora.outputs[0].path), Path(with_lora.adapter.path),
                    {o.type: Path(o.path) for o in merged.outputs}, work)


def scored(path: Path, ids: list[int], lora: Path | None = None, *more: Path) -> list[np.ndarray]:
    """Log-probs of ``ids`` from a GGUF in llama.cpp (a child process), with the adapter GGUF if given; then from
    each of ``more``, loaded in turn by the same child (its start-up paid once), with the adapter too if given."""
    from edgeq.backends.isolated import ChildScorer

    scorer = ChildScorer("llama.cpp", str(path), n_ctx=64, threads=THREADS, lora=str(lora) if lora else None)
    try:
        got = [log_softmax(np.array(scorer.logits(ids), dtype=np.float64))]
        for other in more:
            scorer.open(str(other))
            got.append(log_softmax(np.array(scorer.logits(ids), dtype=np.float64)))
        return got
    finally:
        scorer.close()


def kld_max(ref: np.ndarray, got: np.ndarray) -> float:
    return float((np.exp(ref) * (ref - got)).sum(-1).max())


def row_of(case: LoraCase, *, cli: bool = True) -> dict[str, Any]:
    """The table's columns for the adapter: converts, logits (both paths), loads, plan exact, the commands."""
    from edgeq.planning.size import tensor_types
    from edgeq.planning.source import load
    from edgeq.sources.gguf_header import read_header

    row: dict[str, Any] = {"architecture": NAME, "hf_class": "LlamaForCausalLM + PEFT LoRA", "tokenizer": "smollm2",
                           "covers": f"rank {RANK} on every projection: `--lora` at load time and `--merge-lora` "
                                     "both against PEFT's merged model", "cli_asked": cli,
                           "gguf_arch": f"{read_header(case.lora).metadata.get('general.architecture')} (adapter)"}
    row["converts"] = set(case.merged) == set(QUANTS) and case.lora.is_file()
    quants = list(case.merged)
    bare, *files = scored(case.f16, case.ids, None, *case.merged.values())  # one child: the base, the merged files
    merged, (at_load,) = files[quants.index("F16")], scored(case.f16, case.ids, case.lora)
    row["adapter_effect"] = min(kld_max(case.merged_ref, case.base_ref), kld_max(case.merged_ref, bare))
    row["kld_max"] = max(kld_max(case.merged_ref, at_load), kld_max(case.merged_ref, merged))
    top = case.merged_ref.argmax(-1)
    row["top1_all_pct"] = float(min((at_load.argmax(-1) == top).mean(), (merged.argmax(-1) == top).mean()) * 100)
    row["logits_match"] = bool(row["kld_max"] < KLD_MAX and row["adapter_effect"] > ADAPTER_EFFECT
                               and row["top1_all_pct"] > 90)
    row["loads"], row["finite"] = {}, {}
    for quant, got in zip(quants, files):
        row["loads"][quant], row["finite"][quant] = got.shape == case.merged_ref.shape, bool(np.isfinite(got).all())
    spec = load(str(case.base))
    row["plan_exact"] = {q: dict(zip([t.name for t in spec.tensors], tensor_types(spec, q)))
                         == {t.name: t.type for t in read_header(p).tensors} for q, p in case.merged.items()}
    row["plan_size_exact"] = _plan_sizes_exact(case.base, case.merged)  # plan of the base sizes the merged files
    row["cli"] = {}
    text = case.work / "eval.txt"
    text.write_text(EVAL_TEXT * 4, encoding="utf-8")
    lora = ["--lora", str(case.lora)]
    commands = (("inspect", ["inspect", str(case.merged["Q4_K_M"])]),
                ("eval ppl", ["eval", "ppl", str(case.f16), *lora, "--text", str(text), "--ctx", "32",
                              "--max-tokens", "64", "--threads", str(THREADS), "-o", str(case.work / "eval.json")]),
                ("bench -r 1", ["bench", str(case.f16), *lora, "-p", "8", "-n", "4", "-r", "1", "--batch", "1",
                                "--threads", str(THREADS), "-o", str(case.work / "bench.json")]))
    for verb, args in commands if cli else ():
        code, last = _cli(args)
        row["cli"][verb] = code == 0
        if code:
            row.setdefault("error", f"{verb}: exit {code}: {last}")
    return row


def check(work: Path) -> dict[str, Any]:
    """The adapter row, from nothing (``benchmarks/architectures.py``); a failure is the row's error."""
    from edgeq.sources.embedded import ensure_embedded_model

    t0 = time.monotonic()
    try:
        row = row_of(build(work, ensure_embedded_model()))
    except Exception as e:  # the row records the one-line reason
        row = {"architecture": NAME, "hf_class": "LlamaForCausalLM + PEFT LoRA", "converts": False,
               "error": _last_line(e)}
    row["seconds"] = round(time.monotonic() - t0, 1)
    shutil.rmtree(work, ignore_errors=True)
    return row
