"""The model card of a sentence-embedding model's upload: the Hub's conventions for embedding GGUFs, and the
figures `edgeq eval embeddings` and `edgeq bench` measured.

An embedding GGUF is found by its pooling type (``sources.sentence``).  Its card is tagged as the Hub tags
sentence-embedding GGUFs (``pipeline_tag: sentence-similarity``; ``sentence-transformers``,
``feature-extraction``, ``embeddings``), says which pooling and normalisation a caller must apply (llama.cpp
reads the pooling from the file; the normalisation is the caller's flag), and shows per file the cosine with
sentence-transformers fp32, retrieval agreement, embeddings/s and peak RAM, each from a results file, "—" where
none measured it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..manifest import Manifest
from ..output import human_bytes, md_code, md_text, one_line
from ..reporting.tables import markdown_table
from ..sources.gguf_header import read_header
from ..sources.sentence import EmbeddingHead, gguf_head
from .card import Published, _made, _num, _sh, base_model, source_license

TAGS = ("gguf", "llama-cpp", "edgeq", "quantized", "sentence-transformers", "feature-extraction", "embeddings")
EVAL_SCHEMA, BENCH_SCHEMA = "edgeq-eval-embeddings/", "edgeq-bench-embeddings/"


@dataclass
class FileFigures:
    cos_mean: float | None = None
    cos_min: float | None = None
    topk_agreement: float | None = None
    eps_batch1: float | None = None
    eps_batch: float | None = None  # at the largest batch measured
    batch: int | None = None
    peak_rss_bytes: int | None = None


@dataclass
class EmbeddingMeasured:
    head: EmbeddingHead
    files: dict[str, FileFigures] = field(default_factory=dict)
    results: list[str] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)  # how each results file measured, one line each


def embedding_head(folder: Path, names: list[str]) -> EmbeddingHead | None:
    """The head of the upload's first GGUF: None for a generator."""
    return gguf_head(read_header(folder / names[0]).metadata) if names else None


def measure(head: EmbeddingHead, files: dict[str, int], results: list[Path]) -> EmbeddingMeasured:
    """Per file (by name and size, as ``measured`` matches), the figures of the embedding results among ``results``."""
    m = EmbeddingMeasured(head)
    for p in results:
        try:
            d: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        schema = str(d.get("schema", ""))
        got = _eval(d, files, m) if schema.startswith(EVAL_SCHEMA) else _bench(d, files, m) \
            if schema.startswith(BENCH_SCHEMA) else False
        if got:
            m.results.append(str(p))
    return m


def _name(path: object, size: object, files: dict[str, int]) -> str | None:
    name = Path(str(path or "")).name
    return name if name in files and size == files[name] else None


def _eval(d: dict[str, Any], files: dict[str, int], m: EmbeddingMeasured) -> bool:
    got = False
    for r in d.get("rows") or []:
        if (name := _name(r.get("path"), r.get("size_bytes"), files)) is None:
            continue
        f = m.files.setdefault(name, FileFigures())
        f.cos_mean, f.cos_min, f.topk_agreement = r.get("cos_mean"), r.get("cos_min"), r.get("topk_agreement")
        got = True
    if got:
        t = d.get("texts") or {}
        m.conditions.append(f"- Cosine and retrieval: `edgeq eval embeddings` against sentence-transformers fp32 on "
                            f"{t.get('queries')} queries and {t.get('passages')} passages ({md_text(t.get('source'))}); "
                            f"top-{t.get('k')} overlap of each query's nearest passages with fp32's.")
    return got


def _bench(d: dict[str, Any], files: dict[str, int], m: EmbeddingMeasured) -> bool:
    got = False
    for r in d.get("runs") or []:
        if r.get("status") != "ok" or (name := _name(r.get("path"), r.get("size_bytes"), files)) is None:
            continue
        f = m.files.setdefault(name, FileFigures())
        eps = (r.get("texts_per_s") or {}).get("median")
        if r.get("batch") == 1:
            f.eps_batch1 = eps
        elif f.batch is None or r["batch"] >= f.batch:
            f.eps_batch, f.batch = eps, r["batch"]
        f.peak_rss_bytes = r.get("peak_rss_bytes")
        got = True
    if got:
        env, st = d.get("environment") or {}, d.get("settings") or {}
        m.conditions.append(f"- Speed and peak RAM: `edgeq bench` (llama.cpp), {st.get('texts')} passages per pass, "
                            f"{st.get('threads')} threads, on {md_text(env.get('cpu'))}.")
    return got


def render(mf: Manifest, folder: Path, repo_id: str, files: list[Published], m: EmbeddingMeasured,
           extra: list[str], preface: list[str] | None = None) -> str:
    """The README.md of a sentence-embedding upload."""
    from huggingface_hub import ModelCardData

    base, lic = base_model(mf), source_license(mf)
    fields: dict[str, Any] = {"base_model": base, "license": lic, "pipeline_tag": "sentence-similarity",
                              "tags": list(TAGS)}
    if base:
        fields["base_model_relation"] = "quantized"
    name = repo_id.split("/")[-1]
    made_from = (f"[{md_text(base)}](https://huggingface.co/{quote(base, safe='/')})" if base else "a local checkpoint")
    h = m.head
    body = [f"# {md_text(name)}", "", f"Sentence-embedding GGUF files of {made_from}, converted and quantized by "
            f"edgeq {md_text(mf.edgeq_version)} with {md_text(mf.llama_cpp)}.", "",
            f"Each text becomes one {h.dimension or '—'}-dimensional vector: {h.pooling} pooling over the tokens"
            + (", then L2 normalisation" if h.normalize else " (not normalised)")
            + (f"; texts longer than {h.max_seq_length} tokens are cut, as in training" if h.max_seq_length else "")
            + ". llama.cpp reads the pooling from the file; normalising is the caller's flag (below).", "",
            *(preface or []), "## Files", "", _table(files, m), "", *m.conditions]
    missing = [f.name for f in files if f.name not in m.files]
    if missing:
        body.append(f"- Not measured: {', '.join(md_code(n) for n in missing)}.")
    body += ["", "## How they were made", "", *_made(mf, folder, files), ""]
    if extra:
        body += ["Also in this repo: " + ", ".join(md_code(e) for e in extra) + ".", ""]
    q = [f for f in files if f.record.type not in ("F16", "BF16", "F32")] or files
    tag, repo = q[0].record.type.split("-")[0], _sh(repo_id)
    norm = "--embd-normalize 2" if h.normalize else "--embd-normalize -1"
    body += ["## Use", "", "```bash", f"llama-embedding -hf {_sh(repo_id + ':' + tag)} --pooling {h.pooling} {norm} "
             "-p 'A sentence to embed'", f"llama-server -hf {_sh(repo_id + ':' + tag)} --embedding --pooling {h.pooling}"
             "   # POST /v1/embeddings", f"ollama pull {_sh(f'hf.co/{repo_id}:{tag}')}   # then /api/embed",
             f"hf download {repo} {_sh(q[0].repo_names[0])} --local-dir .", "```", ""]
    body += ["## Verify", "", "```", *[f"{one_line(f.record.sha256)}  {one_line(f.name)}" for f in files], "```", "",
             "```bash", f"hf download {repo} --local-dir {_sh(name)}", f"edgeq verify {_sh(name)}", "```", ""]
    if not lic:
        body += ["Licence: the source's model card names none here; see the base model's.", ""]
    return f"---\n{ModelCardData(**fields).to_yaml()}\n---\n\n" + "\n".join(body)


def _table(files: list[Published], m: EmbeddingMeasured) -> str:
    rows = []
    for f in files:
        g = m.files.get(f.name, FileFigures())
        rows.append([md_code(f.repo_names[0]), md_text(f.record.type), human_bytes(f.record.size_bytes),
                     f"{f.record.bits_per_weight:.2f}", _num(g.cos_mean, ".5f"), _num(g.cos_min, ".5f"),
                     _num(100 * g.topk_agreement if g.topk_agreement is not None else None, ".1f"),
                     _num(g.eps_batch1, ".1f"), _num(g.eps_batch, ".1f"),
                     human_bytes(g.peak_rss_bytes) if g.peak_rss_bytes else "—"])
    return markdown_table(["file", "type", "size", "bits/weight", "mean cosine", "worst cosine", "top-k overlap %",
                           "emb/s batch 1", "emb/s batched", "peak RAM"], rows)


__all__ = ["EmbeddingMeasured", "FileFigures", "embedding_head", "measure", "render"]
