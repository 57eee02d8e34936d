"""The architecture matrix (issue 16): tiny random models of each family, made on the fly, checked through edgeq.

Shared by ``tests/test_architectures.py`` (which asserts every column) and ``benchmarks/architectures.py``
(which runs the same checks and writes the README's table), so the table is what the test saw.

Each case is a model built from a transformers config (2 layers, hidden 64, weights drawn with
``initializer_range`` 0.5 so the logits are peaked and a wrong tensor cannot hide in near-uniform noise) and a
real tokenizer from the vocab-only GGUFs llama.cpp ships.  SentencePiece converters (Gemma, Phi-3) read
``tokenizer.model``; it is written here from the same GGUF vocabulary (pieces, scores, types), so the model
the converter sees has the tokenizer of the family, not a stand-in.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from spm_model import write_sentencepiece_model
from vocab import vocab_tokenizer

from edgeq import config

# F16 conversion of these models gives a KLD to HF fp32 of 2e-3 at most, and moves the log-prob of HF's top token
# by 0.06 nats at most (smollm3's four layers; the 2-layer cases ~0.01), as each row's top1_shift_max records; a
# transposed, swapped, mis-scaled or mis-routed tensor gives O(0.1–1) in both.  Top-1 is compared wherever HF's
# leader is ahead by more than TIE nats; random weights make near-ties, which may fall either way in either engine.
KLD_MAX = 0.01
TIE = 0.1
TEXT = "The quick brown fox jumps over the lazy dog. Once upon a time, in a land far away, there lived a king."
EVAL_TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
             "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light. ")
QUANTS = ("F16", "Q8_0", "Q4_K_M")
# llama.cpp's threads for the logits, eval and bench: one.  Beside the other xdist worker on two cores, two
# threads spin at their barriers waiting for each other; the matrix proves results, the benchmarks time them.
THREADS = 1
BASE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 512, "initializer_range": 0.5}


@dataclass(frozen=True)
class Case:
    """One row of the matrix: which transformers classes, which tokenizer, and what the case is there to test."""

    config: str
    model: str
    vocab: str
    extra: dict[str, Any] = field(default_factory=dict)
    spm: bool = False  # write tokenizer.model (the family's converter reads SentencePiece)
    base: bool = True  # start from BASE (False for configs with other field names)
    vocab_multiple: int = 1  # embedding rows padded to this (Mamba's checkpoints pad to 8; llama.cpp expects it)
    covers: str = ""


# Sliding windows are 8 tokens so the 32-token text crosses them; MoE cases route 2 of 4 experts.
_MOE = {"num_experts": 4, "num_experts_per_tok": 2}
# Granite's multipliers set away from 1, as its checkpoints set them (scaled attention, embeddings and residuals,
# divided logits), so a converter that dropped one would fail.  With the config's defaults (all 1) the unscaled
# attention logits make the tiny model so ill-conditioned that F16 rounding alone moves KLD past 0.01.
_GRANITE = {"attention_multiplier": 0.25, "embedding_multiplier": 12.0, "residual_multiplier": 0.22,
            "logits_scaling": 2.0}
CASES: dict[str, Case] = {
    "llama (BPE)": Case("LlamaConfig", "LlamaForCausalLM", "llama-bpe", covers="Llama 3.x (the seeds' 1B/3B/8B)"),
    "llama (SentencePiece)": Case("LlamaConfig", "LlamaForCausalLM", "llama-spm", spm=True, covers="Llama 2, SPM vocab"),
    "mistral": Case("MistralConfig", "MistralForCausalLM", "llama-spm", covers="SPM via tokenizer.json"),
    "qwen2": Case("Qwen2Config", "Qwen2ForCausalLM", "qwen2", covers="QKV biases"),
    "qwen3": Case("Qwen3Config", "Qwen3ForCausalLM", "qwen2", {"head_dim": 16}, covers="QK norms"),
    "phi (phi-1_5)": Case("PhiConfig", "PhiForCausalLM", "gpt-2", {"partial_rotary_factor": 0.5, "num_key_value_heads": 4, "intermediate_size": 256},
                          covers="the seeds' phi-1_5: parallel block, partial RoPE, biases (llama.cpp assumes MHA and a 4x FFN)"),
    "phi3": Case("Phi3Config", "Phi3ForCausalLM", "phi-3", {"pad_token_id": 0}, spm=True, covers="fused QKV and gate-up"),
    "gemma": Case("GemmaConfig", "GemmaForCausalLM", "llama-spm", {"head_dim": 16}, spm=True,
                  covers="the seeds' gemma-7b: (1+w) norms, scaled embedding"),
    "gemma2": Case("Gemma2Config", "Gemma2ForCausalLM", "llama-spm",
                   {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 8}, spm=True,
                   covers="sliding window, logit soft-capping"),
    # Six layers: Gemma 3's own five sliding to one full.  llama.cpp assumes that pattern (the converter writes no
    # layer_types), so a config with another pattern converts to a file that attends differently.
    "gemma3": Case("Gemma3TextConfig", "Gemma3ForCausalLM", "llama-spm",
                   {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 8, "num_hidden_layers": 6},
                   spm=True, covers="5:1 sliding/full attention (llama.cpp assumes Gemma 3's pattern), QK norms"),
    "olmo2": Case("Olmo2Config", "Olmo2ForCausalLM", "llama-bpe", covers="post-norms"),
    "granite": Case("GraniteConfig", "GraniteForCausalLM", "llama-bpe", _GRANITE,
                    covers="embedding/residual/attention/logit multipliers"),
    "starcoder2": Case("Starcoder2Config", "Starcoder2ForCausalLM", "starcoder", covers="LayerNorm with bias, GELU MLP"),
    # Four layers, the fourth without RoPE: SmolLM3-3B's interval, which llama.cpp assumes (the converter writes none).
    # initializer_range 0.3: logits sharpen with depth, and at 0.5 four layers are as ill-conditioned as a 4-layer
    # llama (KLD ~5e-3 from F16 rounding alone); 0.3 keeps them as peaked as the 2-layer cases.
    "smollm3": Case("SmolLM3Config", "SmolLM3ForCausalLM", "llama-bpe",
                    {"no_rope_layer_interval": 4, "num_hidden_layers": 4, "initializer_range": 0.3},
                    covers="every 4th layer without RoPE (llama.cpp assumes SmolLM3's interval)"),
    "qwen3_moe": Case("Qwen3MoeConfig", "Qwen3MoeForCausalLM", "qwen2",
                      {"head_dim": 16, "moe_intermediate_size": 32, "norm_topk_prob": True, **_MOE},
                      covers="mixture of experts; llama.cpp always renormalises the top-k weights (norm_topk_prob "
                             "true, as Qwen3 MoE checkpoints set it; with false the converted file's KLD was 0.39)"),
    "olmoe": Case("OlmoeConfig", "OlmoeForCausalLM", "llama-bpe", {"num_key_value_heads": 4, **_MOE},
                   covers="mixture of experts, full-width QK norms"),
    "granitemoe": Case("GraniteMoeConfig", "GraniteMoeForCausalLM", "llama-bpe",
                       {"num_local_experts": 4, "num_experts_per_tok": 2, **_GRANITE},
                       covers="mixture of experts, Granite's multipliers"),
    # initializer_range 0.2 (mamba, falcon_h1): at 0.5 the F16 file's logits turn NaN after a few tokens, though its
    # weights are finite and the F32 file matches HF exactly: ggml rounds activations to F16 for F16 weights.
    "mamba": Case("MambaConfig", "MambaForCausalLM", "llama-bpe",
                  {"hidden_size": 64, "num_hidden_layers": 2, "state_size": 16, "initializer_range": 0.2},
                  base=False, vocab_multiple=8,
                  covers="state-space model, no attention (embedding padded to a multiple of 8, as llama.cpp expects)"),
    "falcon_h1": Case("FalconH1Config", "FalconH1ForCausalLM", "llama-bpe",
                      {"head_dim": 16, "mamba_d_ssm": 128, "mamba_n_heads": 8, "mamba_d_head": 16,
                       "mamba_d_state": 16, "mamba_n_groups": 1, "mamba_chunk_size": 16, "initializer_range": 0.2},
                      covers="hybrid attention + SSM"),
    # initializer_range 0.2: at 0.5 the SwiGLU clamp (±7) is active on most units, and the clamped model's
    # logits differ between engines by more than KLD_MAX; real gpt-oss weights sit far inside it.
    "gpt_oss": Case("GptOssConfig", "GptOssForCausalLM", "llama-bpe",
                    {"head_dim": 16, "num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 8,
                     "layer_types": ["sliding_attention", "full_attention"], "initializer_range": 0.2},
                    covers="MoE with attention sinks, sliding window, clamped SwiGLU (the converter writes no "
                           "swiglu_limit: llama.cpp assumes gpt-oss's 7.0)"),
}


# --- the model ---------------------------------------------------------------------------------------------------

def make_model(dest: Path, case: Case) -> tuple[Any, Any]:
    """Save a random model of ``case`` with its tokenizer to ``dest``; return (model in fp32, tokenizer)."""
    import torch
    import transformers

    vocab = config.llama_dir() / "models" / f"ggml-vocab-{case.vocab}.gguf"
    tok = vocab_tokenizer(case.vocab)
    kwargs = {**(BASE if case.base else {}), **case.extra}
    cfg = getattr(transformers, case.config)(vocab_size=-(-len(tok) // case.vocab_multiple) * case.vocab_multiple,
                                             **kwargs)
    torch.manual_seed(0)
    model = getattr(transformers, case.model)(cfg).to(torch.float32).eval()
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    if case.spm:
        write_sentencepiece_model(vocab, dest / "tokenizer.model")
    return model, tok


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _cli(args: list[str]) -> tuple[int, str]:
    from click.testing import CliRunner

    from edgeq.cli import cli

    r = CliRunner().invoke(cli, args)
    lines = [ln.strip() for ln in r.output.splitlines() if ln.strip()]
    return r.exit_code, lines[-1] if lines else repr(r.exception)


def check(name: str, work: Path, *, cli: bool = True) -> dict[str, Any]:
    """Every column of one row: each step's result, or the one-line reason it failed (the steps after a failed
    conversion are not attempted).  ``cli``: run the ``inspect``/``eval``/``bench`` columns too."""
    import torch

    from edgeq.backends.isolated import ChildScorer
    from edgeq.conversion import convert
    from edgeq.planning.size import tensor_types
    from edgeq.planning.source import load
    from edgeq.sources.gguf import read_header

    case, t0 = CASES[name], time.monotonic()
    row: dict[str, Any] = {"architecture": name, "hf_class": case.model, "tokenizer": case.vocab, "covers": case.covers,
                           "cli_asked": cli}
    try:
        model, tok = make_model(work / "hf", case)
        row["gguf_arch"] = ""
        res = convert(str(work / "hf"), quants=list(QUANTS), outdir=work / "out", progress=False)
    except Exception as e:  # the row records the converter's own message
        row["converts"] = False
        row["error"] = _last_line(e)
        return row
    files = {o.type: Path(o.path) for o in res.outputs}
    row["converts"] = set(files) == set(QUANTS)
    row["gguf_arch"] = str(read_header(files["F16"]).metadata.get("general.architecture"))

    ids = tok(TEXT, add_special_tokens=False)["input_ids"][:32]
    with torch.no_grad():
        ref = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1).numpy().astype(np.float64)
    top2 = np.sort(ref, -1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] > TIE
    row["loads"], row["finite"] = {}, {}
    scorer: ChildScorer | None = None  # one child loads the files in turn (its start-up, ~2 s, paid once)
    for quant, path in files.items():
        try:
            if scorer is None:
                scorer = ChildScorer("llama.cpp", str(path), n_ctx=64, threads=THREADS)
            else:
                scorer.open(str(path))
            got = log_softmax(np.array(scorer.logits(ids), dtype=np.float64))
        except Exception as e:
            if scorer is not None:
                scorer.close()  # a child that failed has ended: the next file gets a new one
            scorer = None
            row["loads"][quant] = False
            row.setdefault("error", f"{quant}: {_last_line(e)}")
            continue
        row["loads"][quant] = got.shape == ref.shape
        row["finite"][quant] = bool(np.isfinite(got).all())
        if quant == "F16" and row["loads"][quant]:
            kld = (np.exp(ref) * (ref - got)).sum(-1)
            row["kld_max"] = float(kld.max())
            row["decided_frac"] = float(decided.mean())
            row["top1_decided_agree"] = bool((got.argmax(-1) == ref.argmax(-1))[decided].all())
            row["top1_all_pct"] = float((got.argmax(-1) == ref.argmax(-1)).mean() * 100)
            top = ref.argmax(-1)
            row["top1_shift_max"] = float(np.abs(got[np.arange(len(top)), top] - ref[np.arange(len(top)), top]).max())
    if scorer is not None:
        scorer.close()
    row["logits_match"] = bool(row.get("top1_decided_agree") and row.get("kld_max", 1.0) < KLD_MAX
                               and row.get("decided_frac", 0) > 0.5)

    spec = load(str(work / "hf"))
    row["plan_exact"], row["plan_diff"] = {}, {}
    for quant, path in files.items():
        written = {t.name: t.type for t in read_header(path).tensors}
        predicted = dict(zip([t.name for t in spec.tensors], tensor_types(spec, quant)))
        row["plan_exact"][quant] = predicted == written
        diff = sorted(set(predicted.items()) ^ set(written.items()))
        if diff:
            row["plan_diff"][quant] = [f"{n}: {t}" for n, t in diff[:6]]
    row["plan_size_exact"] = _plan_sizes_exact(work / "hf", files)

    text = work / "eval.txt"
    text.write_text(EVAL_TEXT * 4, encoding="utf-8")
    row["cli"] = {}
    commands = (("inspect", ["inspect", str(files["Q4_K_M"])]),
                ("eval ppl", ["eval", "ppl", str(files["Q8_0"]), "--reference", str(files["F16"]),
                              "--text", str(text), "--ctx", "32", "--max-tokens", "64", "--threads", str(THREADS),
                              "-o", str(work / "eval.json")]),
                ("bench -r 1", ["bench", str(files["Q4_K_M"]), "-p", "8", "-n", "4", "-r", "1",
                                "--batch", "1", "--threads", str(THREADS), "-o", str(work / "bench.json")]))
    for verb, args in commands if cli else ():
        code, last = _cli(args)
        row["cli"][verb] = code == 0
        if code:
            row.setdefault("error", f"{verb}: exit {code}: {last}")
    row["seconds"] = round(time.monotonic() - t0, 1)
    return row


def _plan_sizes_exact(hf: Path, files: dict[str, Path]) -> bool:
    from edgeq.planning import plan

    # A stated machine: file sizes do not depend on it, and this one's memory bandwidth is not measured for them.
    sizes = {r.quant: r.file_size_bytes for r in plan(str(hf), quants=list(files), fit_params=False,
                                                      ram_bytes=8 << 30, bandwidth_gbps=50.0).rows}
    return all(sizes.get(q) == p.stat().st_size for q, p in files.items())


def _last_line(e: BaseException) -> str:
    text = str(e).strip() or "".join(traceback.format_exception_only(type(e), e)).strip()
    return text.splitlines()[-1][:300]


def passes(row: dict[str, Any]) -> bool:
    """Every column holds: converts, F16 logits match, every quant loads with finite logits, plan exact, CLI runs."""
    return bool(row.get("converts") and row.get("logits_match")
                and all(row.get("loads", {}).get(q) and row["finite"].get(q) for q in QUANTS)
                and all(row.get("plan_exact", {}).get(q) for q in QUANTS) and row.get("plan_size_exact")
                and all(row.get("cli", {}).values()) and len(row.get("cli", {})) == (3 if row.get("cli_asked", True) else 0))


# --- the seeds' architectures the pinned converter has no class for ----------------------------------------------

def make_seed_model(dest: Path, kind: str) -> Path:
    """A tiny random OPT or GPT-Neo (the seeds' opt-350m/1.3b and gpt-neo-1.3B) with the GPT-2 tokenizer they use."""
    import torch
    import transformers

    tok = vocab_tokenizer("gpt-2")
    cfg = (transformers.OPTConfig(vocab_size=len(tok), hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                                  num_attention_heads=4, max_position_embeddings=512, word_embed_proj_dim=64)
           if kind == "opt" else
           transformers.GPTNeoConfig(vocab_size=len(tok), hidden_size=64, num_layers=2, num_heads=4,
                                     attention_types=[[["global", "local"], 1]], window_size=8,
                                     max_position_embeddings=512))
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest
