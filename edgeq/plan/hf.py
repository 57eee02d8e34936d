"""A ``ModelSpec`` from a Hugging Face checkpoint: config.json, tokenizer.json and the safetensors *headers*
(of a local folder, or fetched from the Hub by range request), never a weight."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import config as edgeq_config
from .. import manifest
from ..errors import SourceError
from ..files import safe_name
from ..sources import Source
from ..sources.checkpoint import read_safetensors_header
from ..sources.hub import hub_errors
from .spec import FIXED_METADATA_BYTES, METADATA_BYTES_PER_TOKEN, ModelSpec, TensorSpec

# HF architectures → llama.cpp's name for them (the converters' MODEL_ARCH), for the families planned.
HF_ARCH = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
           "Gemma2ForCausalLM": "gemma2", "GemmaForCausalLM": "gemma", "Qwen3ForCausalLM": "qwen3",
           "Phi3ForCausalLM": "phi3", "Gemma3ForCausalLM": "gemma3"}
# HF tensor-name pieces → GGUF names (what convert_hf_to_gguf.py's TensorNameMap gives these families).
_LAYER_NAMES = [("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                ("self_attn.o_proj", "attn_output"), ("self_attn.q_norm", "attn_q_norm"),
                ("self_attn.k_norm", "attn_k_norm"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
                ("mlp.down_proj", "ffn_down"), ("post_attention_layernorm", "post_attention_norm"),
                ("pre_feedforward_layernorm", "ffn_norm"), ("post_feedforward_layernorm", "post_ffw_norm"),
                ("input_layernorm", "attn_norm"), ("mlp.c_fc", "ffn_up"), ("mlp.c_proj", "ffn_down")]  # c_*: StarCoder2


def gguf_name(hf_name: str, arch: str) -> str | None:
    """GGUF name of an HF tensor; None for tensors the converter drops (rotary caches)."""
    name = hf_name.removeprefix("model.").removeprefix("language_model.")
    if "rotary_emb" in name:
        return None
    if name in ("embed_tokens.weight", "wte.weight"):
        return "token_embd.weight"
    if name in ("lm_head.weight",):
        return "output.weight"
    if name in ("norm.weight", "norm.bias"):  # the bias: LayerNorm families (StarCoder2)
        return "output_norm." + name.split(".")[1]
    parts = name.split(".")
    if parts[0] == "layers" and len(parts) > 2:
        rest = ".".join(parts[2:])
        for hf, gg in _LAYER_NAMES:
            if rest.startswith(hf + "."):
                # Llama-style models: post_attention_layernorm is the pre-FFN norm (ffn_norm); in the
                # post-norm families it is what its name says (found by the architecture matrix for OLMo 2).
                if hf == "post_attention_layernorm" and arch not in ("gemma2", "gemma3", "olmo2"):
                    gg = "ffn_norm"
                return f"blk.{parts[1]}.{gg}.{rest[len(hf) + 1:]}"
        return f"blk.{parts[1]}.{rest}"
    return name


def from_hf(config: dict[str, Any], headers: dict[str, list[int]], tokenizer: dict[str, Any] | None,
            chat_template: str | None, *, name: str, source: str, kind: str) -> ModelSpec:
    """Build a spec from config.json, {tensor name: HF shape} and tokenizer.json (all optional but config)."""
    cfg: dict[str, Any] = config["text_config"] if isinstance(config.get("text_config"), dict) else config
    archs = cfg.get("architectures") or config.get("architectures") or [""]
    arch = HF_ARCH.get(str(archs[0]), str(cfg.get("model_type", "llama")))
    tied = bool(cfg.get("tie_word_embeddings", config.get("tie_word_embeddings", False)))
    tensors = []
    for hf_name, shape in headers.items():
        gg = gguf_name(hf_name, arch)
        if gg is None or (tied and gg == "output.weight"):
            continue
        shape_gg = list(reversed([int(d) for d in shape]))
        tensors.append(TensorSpec(gg, shape_gg, "F32" if len(shape_gg) < 2 or gg.endswith("_norm.weight") else "F16"))
    spec = spec_from_config(cfg, name=name, source=source, kind=kind, arch=arch)
    spec.tensors = sorted(tensors, key=lambda t: t.name)
    if tokenizer is not None:
        spec.metadata_bytes = metadata_bytes(tokenizer, spec.n_vocab, chat_template)
    return spec


def spec_from_config(cfg: dict[str, Any], *, name: str, source: str, kind: str, arch: str) -> ModelSpec:
    """The numbers the KV cache and compute estimates need (tensors are filled in by the caller)."""
    g = cfg.get
    n_embd, n_head = int(g("hidden_size")), int(g("num_attention_heads"))  # type: ignore[arg-type]
    hd = int(g("head_dim") or n_embd // n_head)
    n_layer = int(g("num_hidden_layers"))  # type: ignore[arg-type]
    window = g("sliding_window")
    swa_layers = 0
    if window and arch == "gemma2":
        swa_layers = n_layer // 2  # every other layer (llama.cpp: swa pattern 2)
    elif window and g("use_sliding_window"):
        swa_layers = n_layer
    vocab = int(g("vocab_size"))  # type: ignore[arg-type]
    return ModelSpec(
        name=name, source=source, kind=kind, arch=arch, n_layer=n_layer, n_embd=n_embd, n_head=n_head,
        n_head_kv=int(g("num_key_value_heads") or n_head), head_dim_k=hd, head_dim_v=hd,
        n_ff=int(g("intermediate_size")), n_vocab=vocab,  # type: ignore[arg-type]
        ctx_train=int(g("max_position_embeddings")) if g("max_position_embeddings") else None,  # type: ignore[arg-type]
        sliding_window=int(window) if swa_layers else None, swa_layers=swa_layers,  # type: ignore[arg-type]
        metadata_bytes=FIXED_METADATA_BYTES + METADATA_BYTES_PER_TOKEN * vocab)


def metadata_bytes(tok: dict[str, Any], n_vocab: int, chat_template: str | None) -> int:
    """GGUF bytes of the vocabulary as the converter writes it: strings (8-byte length + UTF-8), types, merges."""
    model = tok.get("model") or {}
    vocab = model.get("vocab") or {}
    pieces = list(vocab) if isinstance(vocab, dict) else [v[0] for v in vocab]  # Unigram: [piece, score]
    known = set(pieces)
    pieces += [a["content"] for a in tok.get("added_tokens") or [] if a.get("content") not in known]
    pieces += [f"[PAD{i}]" for i in range(len(pieces), n_vocab)]  # the converter pads to vocab_size
    total = sum(8 + len(p.encode()) for p in pieces[:n_vocab]) + 4 * n_vocab
    if not isinstance(vocab, dict):
        total += 4 * n_vocab  # scores
    for m in model.get("merges") or []:
        total += 8 + len((" ".join(m) if isinstance(m, list) else m).encode())
    return FIXED_METADATA_BYTES + total + len((chat_template or "").encode())


def from_hf_folder(folder: Path, source: str) -> ModelSpec:
    """A spec from an HF checkpoint folder (``sources.resolve`` has seen its config.json)."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise SourceError(f"{folder} has no *.safetensors, so its tensor shapes are unknown.",
                          hint="Download the safetensors files (or their headers), or plan a family with --largest.")
    headers = {k: v["shape"] for f in files
               for k, v in read_safetensors_header(f, check_data=False).items()}
    tok = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")) if (folder / "tokenizer.json").is_file() else None
    return from_hf(config, headers, tok, _chat_template(folder), name=folder.name, source=source, kind="hf-folder")


def _chat_template(folder: Path) -> str | None:
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    tc = folder / "tokenizer_config.json"
    if tc.is_file():
        t = json.loads(tc.read_text(encoding="utf-8")).get("chat_template")
        return t if isinstance(t, str) else None
    return None


def from_hub(src: Source, *, token: str | None = None, endpoint: str | None = None) -> ModelSpec:
    """config.json and tokenizer files by download, tensor shapes by range requests on the safetensors headers."""
    from huggingface_hub import HfApi, snapshot_download

    repo_id, commit = str(src.repo_id), str(src.revision)
    token = token or edgeq_config.hf_token()
    endpoint = endpoint or edgeq_config.hf_endpoint()
    with hub_errors(repo_id, commit, token):
        api = HfApi(endpoint=endpoint)
        meta = api.get_safetensors_metadata(repo_id, revision=commit, token=token)
        path = Path(snapshot_download(repo_id, revision=commit, token=token, endpoint=endpoint,
                                      cache_dir=edgeq_config.hf_cache_dir(),
                                      allow_patterns=["config.json", "tokenizer.json", "tokenizer_config.json",
                                                      "chat_template.jinja"]))
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    headers = {k: list(t.shape) for fm in meta.files_metadata.values() for k, t in fm.tensors.items()}
    tok = json.loads((path / "tokenizer.json").read_text(encoding="utf-8")) if (path / "tokenizer.json").is_file() else None
    spec = from_hf(config, headers, tok, _chat_template(path), name=repo_id.split("/")[-1], source=repo_id, kind="hub")
    spec.files = converted_files(repo_id, commit)
    return spec


def converted_files(repo_id: str, commit: str) -> dict[str, str]:
    """GGUFs that ``edgeq convert REPO_ID`` already made from this commit (its folder and manifest)."""

    folder = edgeq_config.models_dir() / safe_name(repo_id)
    mf = manifest.load(folder) if (folder / edgeq_config.MANIFEST_NAME).is_file() else None
    if mf is None or mf.source.get("repo_id") != repo_id or mf.source.get("revision") != commit:
        return {}
    stem = safe_name(repo_id)
    return {rec.type: str(folder / name) for name, rec in mf.files.items()
            if name == f"{stem}-{rec.type}.gguf" and (folder / name).is_file()}  # plain recipes, not labelled ones
