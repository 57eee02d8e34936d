"""Common open models as config numbers only (edgeq/data/model-configs.json), turned into tensor lists."""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from ..errors import UsageError
from .hf import spec_from_config
from .spec import ModelSpec, TensorSpec

CONFIGS_FILE = "model-configs.json"


@lru_cache(maxsize=1)
def configs() -> dict[str, dict[str, Any]]:
    raw = json.loads(resources.files("edgeq.data").joinpath(CONFIGS_FILE).read_text(encoding="utf-8"))
    return raw["models"]


def families() -> list[str]:
    return sorted({c["family"] for c in configs().values()})


def _tensors(c: dict[str, Any]) -> list[TensorSpec]:
    """The GGUF tensors convert_hf_to_gguf.py writes for a dense llama / qwen2 / gemma2 model."""
    e, ff, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = c.get("head_dim") or e // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    t = [TensorSpec("token_embd.weight", [e, v]), TensorSpec("output_norm.weight", [e], "F32")]
    if not c["tie_word_embeddings"]:
        t.append(TensorSpec("output.weight", [e, v]))
    norms = ["attn_norm", "ffn_norm"] + (["post_attention_norm", "post_ffw_norm"] if c["arch"] == "gemma2" else [])
    for i in range(c["num_hidden_layers"]):
        b = f"blk.{i}."
        t += [TensorSpec(b + "attn_q.weight", [e, q]), TensorSpec(b + "attn_k.weight", [e, kv]),
              TensorSpec(b + "attn_v.weight", [e, kv]), TensorSpec(b + "attn_output.weight", [q, e]),
              TensorSpec(b + "ffn_gate.weight", [e, ff]), TensorSpec(b + "ffn_up.weight", [e, ff]),
              TensorSpec(b + "ffn_down.weight", [ff, e])]
        t += [TensorSpec(f"{b}{n}.weight", [e], "F32") for n in norms]
        if c["arch"] == "qwen2":  # q/k/v biases
            t += [TensorSpec(b + "attn_q.bias", [q], "F32"), TensorSpec(b + "attn_k.bias", [kv], "F32"),
                  TensorSpec(b + "attn_v.bias", [kv], "F32")]
    return t


def spec(name: str) -> ModelSpec:
    """A ModelSpec for one shipped config (metadata size estimated from the vocabulary size)."""
    cfgs = configs()
    key = next((k for k in cfgs if k.lower() == name.lower()), None)
    if key is None:
        raise UsageError(f"unknown model config {name!r}.", hint=f"Known: {', '.join(cfgs)}.")
    c = cfgs[key]
    s = spec_from_config(c, name=key, source=c["source"], kind="family", arch=c["arch"])
    s.tensors = _tensors(c)
    return s


def members(family: str | None) -> list[str]:
    """Model names of one family (all when None), smallest first."""
    fams = families()
    if family is not None and family.lower() not in fams:
        raise UsageError(f"unknown model family {family!r}.", hint=f"Known families: {', '.join(fams)}.")
    names = [k for k, c in configs().items() if family is None or c["family"] == family.lower()]
    return sorted(names, key=lambda k: configs()[k]["published_parameters"])
