"""A ``ModelSpec`` from a Hugging Face checkpoint: the GGUF header the vendored converter would write for it,
from config.json, the tokenizer files and the safetensors *headers* (of a local folder, or fetched from the Hub by
range request into a sparse stand-in), never a weight; and the config numbers of a family (``spec_from_config``)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from .. import config as edgeq_config
from .. import manifest
from ..errors import SourceError, ToolFailed
from ..files import safe_name
from ..llamacpp.converter import converter_error
from ..llamacpp.would_write import converter_header, stub_checkpoint
from ..sources import Source
from ..sources.hub import hub_errors
from .spec import FIXED_METADATA_BYTES, METADATA_BYTES_PER_TOKEN, ModelSpec, from_header

# What the converter reads besides weights (its own --remote mode fetches the same): the model card and licence too,
# since their fields become metadata keys.
SMALL_FILES = ["LICENSE", "*.json", "*.md", "*.txt", "*.jinja", "tokenizer.model"]


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


def from_hf_folder(folder: Path, source: str) -> ModelSpec:
    """A spec from an HF checkpoint folder: the header the vendored converter would write for it."""
    if not any(folder.glob("*.safetensors")):
        raise SourceError(f"{folder} has no *.safetensors, so its tensor shapes are unknown.",
                          hint="Download the safetensors files (or their headers), or plan a family with --largest.")
    return _from_converter(folder, name=folder.name, source=source, kind="hf-folder")


def _from_converter(folder: Path, *, name: str, source: str, kind: str) -> ModelSpec:
    try:
        header = converter_header(folder)
    except ToolFailed as e:
        named = converter_error(e, source, doing="read")
        if isinstance(named, SourceError):
            raise named from None
        reason = named.tail if isinstance(named, ToolFailed) else e.last_line
        raise SourceError(f"the vendored converter cannot read {source}: {reason}.",
                          hint=(named.hint if named else None) or "edgeq convert would fail the same way.") from None
    return from_header(header, name=name, source=source, kind=kind)


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
                                      cache_dir=edgeq_config.hf_cache_dir(), allow_patterns=SMALL_FILES))
    headers = {fname: {"__metadata__": fm.metadata or {},
                       **{k: {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": list(t.data_offsets)}
                          for k, t in fm.tensors.items()}}
               for fname, fm in meta.files_metadata.items()}
    small = {p.name: p for p in path.iterdir() if p.is_file()}
    with tempfile.TemporaryDirectory(prefix="edgeq-plan-") as tmp:
        # Named as the snapshot folder convert reads (its commit): the converter names the model after its folder.
        stub = stub_checkpoint(Path(tmp) / commit, small, headers)
        spec = _from_converter(stub, name=repo_id.split("/")[-1], source=repo_id, kind="hub")
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
