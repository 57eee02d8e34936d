"""What a plan needs to know about a model, read from headers only: never a weight.

A ``ModelSpec`` comes from a GGUF's header, a folder of GGUFs, an HF checkpoint's
config.json + tokenizer + safetensors *headers* (local, or fetched from the Hub by
range request), or a family's config numbers (``families.py``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint import read_safetensors_header
from ..errors import SourceError, UsageError

# Bytes of GGUF metadata besides the vocabulary: ~40 keys and their names.
_FIXED_METADATA_BYTES = 2048
# Per vocabulary entry when only the size is known: a token string, its type and a merge (SmolLM2: 36).
METADATA_BYTES_PER_TOKEN = 36


@dataclass
class TensorSpec:
    name: str  # GGUF name (token_embd.weight, blk.0.attn_v.weight, …)
    shape: list[int]  # ggml order: shape[0] is the row length
    base_type: str = "F16"  # type in the float GGUF that quants are made from

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class ModelSpec:
    name: str
    source: str  # what the user passed
    kind: str  # gguf | gguf-folder | hf-folder | hub | family
    arch: str  # llama.cpp architecture name (llama, qwen2, gemma2, …)
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_ff: int
    n_vocab: int
    ctx_train: int | None = None
    sliding_window: int | None = None  # tokens, for the layers that use it
    swa_layers: int = 0  # how many layers attend through the window
    metadata_bytes: int = 0  # GGUF key/value section, mostly the vocabulary
    alignment: int = 32
    tensors: list[TensorSpec] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # quant -> existing GGUF path
    current_types: list[str] = field(default_factory=list)  # a GGUF source's own tensor types

    @property
    def parameters(self) -> int:
        return sum(t.n_elements for t in self.tensors)


# --- GGUF -------------------------------------------------------------------------------------


def from_gguf(path: Path, source: str | None = None) -> ModelSpec:
    from ..gguf_info import read_header

    h = read_header(path)
    m = h.metadata
    arch = str(m.get("general.architecture", "unknown"))

    def key(k: str, default: int = 0) -> int:
        v = m.get(f"{arch}.{k}", default)
        return int(v[0] if isinstance(v, list) else v)

    n_embd, n_head = key("embedding_length"), key("attention.head_count")
    hd = n_embd // max(1, n_head)
    n_vocab = key("vocab_size") or int(m.get("tokenizer.ggml.tokens", 0))
    tensors = [TensorSpec(t.name, t.shape, "F32" if len(t.shape) < 2 or t.type == "F32" else "F16")
               for t in h.tensors]
    window = key("attention.sliding_window") or None
    return ModelSpec(
        name=str(m.get("general.name") or path.stem), source=source or str(path), kind="gguf", arch=arch,
        n_layer=key("block_count"), n_embd=n_embd, n_head=n_head, n_head_kv=key("attention.head_count_kv", n_head),
        head_dim_k=key("attention.key_length", hd), head_dim_v=key("attention.value_length", hd),
        n_ff=key("feed_forward_length"), n_vocab=n_vocab, ctx_train=key("context_length") or None,
        sliding_window=window, swa_layers=key("block_count") // 2 if window and arch.startswith("gemma2") else 0,
        metadata_bytes=h.data_offset_bytes - _table_bytes(tensors), alignment=h.alignment, tensors=tensors,
        files={_file_type(m): str(path)}, current_types=[t.type for t in h.tensors])


def _table_bytes(tensors: list[TensorSpec]) -> int:
    return sum(8 + len(t.name.encode()) + 4 + 8 * len(t.shape) + 4 + 8 for t in tensors)


def _file_type(meta: dict[str, Any]) -> str:
    from gguf import LlamaFileType

    v = meta.get("general.file_type")
    try:
        return LlamaFileType(int(v)).name.removeprefix("MOSTLY_").removeprefix("ALL_")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "unknown"


def from_gguf_folder(folder: Path, source: str) -> ModelSpec:
    """One file's header describes them all; files named ``<stem>-<QUANT>.gguf`` give measured sizes."""
    from ..quants import QUANT_TYPES

    files = sorted(folder.glob("*.gguf"))
    named = {f.stem.rsplit("-", 1)[-1].upper(): f for f in files}
    named = {q: f for q, f in named.items() if q in QUANT_TYPES}
    spec = from_gguf(next(iter(named.values()), files[0]), source)
    spec.kind = "gguf-folder"
    spec.files = {q: str(f) for q, f in named.items()}
    return spec


# --- Hugging Face checkpoint -----------------------------------------------------------------

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
                ("input_layernorm", "attn_norm")]


def gguf_name(hf_name: str, arch: str) -> str | None:
    """GGUF name of an HF tensor; None for tensors the converter drops (rotary caches)."""
    name = hf_name.removeprefix("model.").removeprefix("language_model.")
    if "rotary_emb" in name:
        return None
    if name in ("embed_tokens.weight", "wte.weight"):
        return "token_embd.weight"
    if name in ("lm_head.weight",):
        return "output.weight"
    if name == "norm.weight":
        return "output_norm.weight"
    parts = name.split(".")
    if parts[0] == "layers" and len(parts) > 2:
        rest = ".".join(parts[2:])
        for hf, gg in _LAYER_NAMES:
            if rest.startswith(hf + "."):
                # Llama-style models: post_attention_layernorm is the pre-FFN norm (ffn_norm).
                if hf == "post_attention_layernorm" and arch not in ("gemma2", "gemma3"):
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
        metadata_bytes=_FIXED_METADATA_BYTES + METADATA_BYTES_PER_TOKEN * vocab)


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
    return _FIXED_METADATA_BYTES + total + len((chat_template or "").encode())


def from_hf_folder(folder: Path, source: str) -> ModelSpec:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise SourceError(f"{folder} has neither GGUF files nor a config.json: no model to plan.",
                          hint="Pass a .gguf file, a folder of them, an HF checkpoint folder or a repo id.")
    config = json.loads(cfg_path.read_text(encoding="utf-8"))
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


def from_hub(repo_id: str, *, revision: str | None = None, token: str | None = None,
             endpoint: str | None = None) -> ModelSpec:
    """config.json and tokenizer files by download, tensor shapes by range requests on the safetensors headers."""
    from huggingface_hub import HfApi, snapshot_download

    from .. import config as edgeq_config
    from ..download import _hub_errors

    token = token or edgeq_config.hf_token()
    endpoint = endpoint or edgeq_config.hf_endpoint()
    with _hub_errors(repo_id, revision, token):
        api = HfApi(endpoint=endpoint)
        meta = api.get_safetensors_metadata(repo_id, revision=revision, token=token)
        path = Path(snapshot_download(repo_id, revision=revision, token=token, endpoint=endpoint,
                                      cache_dir=edgeq_config.hf_cache_dir(),
                                      allow_patterns=["config.json", "tokenizer.json", "tokenizer_config.json",
                                                      "chat_template.jinja"]))
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    headers = {k: list(t.shape) for fm in meta.files_metadata.values() for k, t in fm.tensors.items()}
    tok = json.loads((path / "tokenizer.json").read_text(encoding="utf-8")) if (path / "tokenizer.json").is_file() else None
    spec = from_hf(config, headers, tok, _chat_template(path), name=repo_id.split("/")[-1], source=repo_id, kind="hub")
    spec.files = converted_files(repo_id, path.name)  # the snapshot folder is named by its commit
    return spec


def converted_files(repo_id: str, commit: str) -> dict[str, str]:
    """GGUFs that ``edgeq convert REPO_ID`` already made from this commit (its folder and manifest)."""
    from .. import config as edgeq_config
    from .. import manifest
    from ..files import safe_name

    folder = edgeq_config.models_dir() / safe_name(repo_id)
    mf = manifest.load(folder) if (folder / edgeq_config.MANIFEST_NAME).is_file() else None
    if mf is None or mf.source.get("repo_id") != repo_id or mf.source.get("revision") != commit:
        return {}
    stem = safe_name(repo_id)
    return {rec.type: str(folder / name) for name, rec in mf.files.items()
            if name == f"{stem}-{rec.type}.gguf" and (folder / name).is_file()}  # plain recipes, not labelled ones


def load(source: str | None, *, revision: str | None = None, token: str | None = None) -> ModelSpec:
    """A ModelSpec for a GGUF file, a folder (GGUFs or an HF checkpoint) or a Hub repo id (None: the embedded model)."""
    from ..download import is_repo_id

    if source is None:
        from ..embedded import ensure_embedded_model

        source = str(ensure_embedded_model())

    p = Path(source).expanduser()
    if p.is_file():
        if p.suffix != ".gguf":
            raise UsageError(f"{p} is not a .gguf file.", hint="Pass a GGUF file, a model folder or a repo id.")
        return from_gguf(p, source)
    if p.is_dir():
        if any(p.glob("*.gguf")):
            return from_gguf_folder(p, source)
        return from_hf_folder(p, source)
    if is_repo_id(source) and not source.startswith((".", "/", "~")):
        return from_hub(source, revision=revision, token=token)
    raise UsageError(f"{source!r} is not a file, a folder or a Hugging Face repo id.",
                     hint="Pass a .gguf file, a folder of them, an HF checkpoint folder or owner/name.")
