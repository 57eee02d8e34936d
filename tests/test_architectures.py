"""The architecture matrix (issue 16, begun): tiny random models of each family, proven by logits.

Each case is a model made on the fly from a transformers config (2 layers, hidden 64, weights drawn with
``initializer_range`` 0.5 so the logits are peaked and a wrong tensor cannot hide in near-uniform noise), with
a real tokenizer from the vocab-only GGUFs llama.cpp ships.  Through edgeq: convert to F16, Q8_0 and Q4_K_M;
the F16 file's next-token log-probabilities on a fixed text must give HF fp32's top-1 on every position not a
near-tie (``TIE``) and a KLD under ``KLD_MAX`` (F16 rounding of these weights gives ~1e-3 at most here; a transposed, swapped or
mis-scaled tensor gives O(1)); the quants must load and give finite logits; and `plan` must predict every
tensor of each file, by name and type, as the written file has it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeq import config

pytestmark = pytest.mark.slow
KLD_MAX = 0.01
TIE = 0.02  # nats: ~10× the largest log-prob shift F16 rounding gave on these models
TEXT = "The quick brown fox jumps over the lazy dog. Once upon a time, in a land far away, there lived a king."

# name: (transformers config and model classes, vocab GGUF for the tokenizer, extra config)
CASES = {
    "llama (BPE)": ("LlamaConfig", "LlamaForCausalLM", "llama-bpe", {}),
    "mistral (SentencePiece)": ("MistralConfig", "MistralForCausalLM", "llama-spm", {}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", "qwen2", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", "qwen2", {"head_dim": 16}),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", "llama-bpe", {}),
    "granite": ("GraniteConfig", "GraniteForCausalLM", "llama-bpe", {}),
    "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM", "starcoder", {}),
}


def _make(dest: Path, cfg_name: str, model_name: str, vocab: str, extra: dict[str, object]) -> tuple[object, object]:
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(config.llama_dir() / "models", gguf_file=f"ggml-vocab-{vocab}.gguf")
    cfg = getattr(transformers, cfg_name)(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                          max_position_embeddings=512, initializer_range=0.5, **extra)
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(cfg).to(torch.float32).eval()
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return model, tok


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


@pytest.mark.parametrize("case", sorted(CASES))
def test_architecture_converts_and_its_logits_agree(case, tmp_path):
    import torch

    from edgeq.backends.isolated import ChildScorer
    from edgeq.convert import convert
    from edgeq.plan.size import tensor_types
    from edgeq.plan.source import load
    from edgeq.sources.gguf import read_header

    model, tok = _make(tmp_path / "hf", *CASES[case][:3], CASES[case][3])
    res = convert(str(tmp_path / "hf"), quants=["F16", "Q8_0", "Q4_K_M"], outdir=tmp_path / "out", progress=False)
    files = {o.type: o.path for o in res.outputs}
    assert set(files) == {"F16", "Q8_0", "Q4_K_M"}

    ids = tok(TEXT, add_special_tokens=False)["input_ids"][:32]
    with torch.no_grad():
        ref = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1).numpy()
    for quant, path in files.items():
        scorer = ChildScorer("llama.cpp", path, n_ctx=64, threads=2)
        try:
            got = _log_softmax(np.array(scorer.logits(ids), dtype=np.float64))
        finally:
            scorer.close()
        assert got.shape == ref.shape and np.isfinite(got).all(), quant
        if quant == "F16":
            # Top-1 must agree wherever HF's leader is ahead by more than F16 rounding can move two log-probs
            # (TIE nats); random weights make near-ties, and those may fall either way in either engine.
            top2 = np.sort(ref, -1)[:, -2:]
            decided = top2[:, 1] - top2[:, 0] > TIE
            assert decided.mean() > 0.5 and (got.argmax(-1) == ref.argmax(-1))[decided].all(), "top-1 differs"
            kld = (np.exp(ref) * (ref - got)).sum(-1)
            assert kld.max() < KLD_MAX, f"KLD to HF fp32 up to {kld.max():.4f}"

    spec = load(str(tmp_path / "hf"))
    for quant, path in files.items():
        written = {t.name: t for t in read_header(path).tensors}
        predicted = dict(zip([t.name for t in spec.tensors], tensor_types(spec, quant)))
        assert predicted == {n: t.type for n, t in written.items()}, quant
