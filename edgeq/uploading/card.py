"""The model card of an upload: front matter the Hub indexes, and a body of measured numbers.

Every figure in the card comes from a results file (``measured``); a file without one shows "—", and the
card says which figures were not measured, so a reader never takes a blank for a zero or a guess for a
measurement.  How each file was made comes from the manifest and from the GGUF's own metadata (llama-quantize
records the importance matrix and its text there).
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..manifest import FileRecord, Manifest
from ..output import human_bytes, md_code, md_text, one_line
from ..quants import QUANT_TYPES
from ..reporting.tables import markdown_table
from ..sources import embedded, minilm
from ..sources.gguf_header import read_header
from ..sources.texts import describe_dataset
from .measured import Measured

TAGS = ("gguf", "llama-cpp", "edgeq", "quantized")


@dataclass
class Published:
    """One GGUF of the upload: its manifest record and the names it has in the repo (several when split)."""

    name: str  # in the folder
    record: FileRecord
    repo_names: list[str]


def base_model(mf: Manifest) -> str | None:
    """The Hub repo the files were made from: the source repo, or the embedded (or packaged) model's upstream."""
    src = mf.source
    if src.get("kind") == "hub":
        return str(src.get("repo_id") or "") or None
    if src.get("kind") == "embedded":
        return embedded.UPSTREAM_REPO_ID
    if src.get("kind") == "packaged":
        return minilm.UPSTREAM_REPO_ID
    return None


def source_license(mf: Manifest) -> str | None:
    """The licence id of the source: its own model card's front matter, else the embedded model's."""
    if mf.source.get("kind") == "embedded":
        return embedded.LICENSE
    if mf.source.get("kind") == "packaged":
        return minilm.LICENSE
    readme = Path(str(mf.source.get("path") or "")) / "README.md"
    if readme.is_file():
        from huggingface_hub import ModelCard

        try:
            lic = ModelCard.load(readme).data.license
        except Exception:  # noqa: BLE001 - a card we cannot parse gives no licence, not a failed upload
            return None
        return str(lic) if lic else None
    return None


def render(mf: Manifest, folder: Path, repo_id: str, files: list[Published], measured: Measured,
           extra: list[str], preface: list[str] | None = None) -> str:
    """The README.md: YAML front matter, then ``preface`` (ship's recommendation), the files table, how they
    were made, use and verify."""
    from huggingface_hub import ModelCardData

    first = read_header(folder / files[0].name) if files else None
    arch = str(first.metadata.get("general.architecture") or "") if first else ""
    base, lic = base_model(mf), source_license(mf)
    # base_model_relation is a field the Hub reads that ModelCardData keeps as an extra key.
    fields: dict[str, Any] = {"base_model": base, "license": lic, "pipeline_tag": "text-generation",
                              "tags": [*TAGS, *([one_line(arch)] if arch else []),
                                       *(["imatrix"] if any(_imatrix(folder / f.name) for f in files) else [])]}
    if base:
        fields["base_model_relation"] = "quantized"
    data = ModelCardData(**fields)
    name = repo_id.split("/")[-1]
    # Every string below that edgeq did not write itself (names, the manifest's and the GGUFs' metadata,
    # results files) goes through md_text or md_code, so none can add a heading, a link, HTML or a line.
    body = [f"# {md_text(name)}", ""]
    made_from = (f"[{md_text(base)}](https://huggingface.co/{quote(base, safe='/')})" if base
                 else f"a local checkpoint ({_source(mf)})")
    body += [f"GGUF files of {made_from}, converted and quantized by edgeq "
             f"{md_text(mf.edgeq_version)} with {md_text(mf.llama_cpp)}.", ""]
    if mf.source.get("kind") == "embedded":
        body += [f"> {embedded.CAVEAT}", ""]
    body += [*(preface or []), "## Files", "", _files_table(files, measured), "", *_measured_notes(files, measured), ""]
    body += ["## How they were made", "", *_made(mf, folder, files), ""]
    if extra:
        body += ["Also in this repo: " + ", ".join(md_code(e) for e in extra) + ".", ""]
    body += ["## Use", "", *_usage(repo_id, files), ""]
    body += ["## Verify", "", "sha256 of each file as edgeq wrote it (a split file: of the whole file, before "
             "splitting):", "", "```", *[f"{one_line(f.record.sha256)}  {one_line(f.name)}" for f in files], "```", "",
             "```bash", f"hf download {_sh(repo_id)} --local-dir {_sh(name)}", f"edgeq verify {_sh(name)}   "
             "# re-hashes every file the manifest lists", "```", ""]
    if any(len(f.repo_names) > 1 for f in files):
        body += ["A split file is listed by its whole name: join its shards first (`llama-gguf-split --merge "
                 "<first shard> <name>.gguf`; llama.cpp itself loads the shards as they are).", ""]
    if not lic:
        body += ["Licence: the source's model card names none here; see the base model's.", ""]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)


def _source(mf: Manifest) -> str:
    src = mf.source
    if src.get("kind") == "hub":
        return md_text(f"{src.get('repo_id')}@{str(src.get('revision') or '')[:12]}")
    return md_text(f"{src.get('kind')} {Path(str(src.get('path') or '')).name}, fingerprint {src.get('fingerprint')}")


def _files_table(files: list[Published], m: Measured) -> str:
    rows = []
    for f in files:
        q, s = m.quality.get(f.name), m.speed.get(f.name)
        shown = f.repo_names[0] if len(f.repo_names) == 1 else f"{f.repo_names[0]} (+{len(f.repo_names) - 1} shards)"
        ref = f.name in m.references and q is None
        rows.append([md_code(shown), md_text(f.record.type), human_bytes(f.record.size_bytes), f"{f.record.bits_per_weight:.2f}",
                     "reference" if ref else _num(q.kld_mean if q else None, ".3g"), _num(q.delta_ppl_pct if q else None, "+.2f"),
                     _num(q.top1_pct if q else None, ".1f"), _num(s.pp_tps if s else None, ".0f"),
                     _num(s.tg_tps if s else None, ".1f"),
                     human_bytes(s.peak_rss_bytes) if s and s.peak_rss_bytes else "—"])
    return markdown_table(["file", "type", "size", "bits/weight", "KLD", "ΔPPL %", "top-1 %", "pp tok/s",
                           "tg tok/s", "peak RAM"], rows)


def _measured_notes(files: list[Published], m: Measured) -> list[str]:
    notes = []
    refs = {(q.reference, q.text, q.tokens) for q in m.quality.values()}
    for ref, text, tokens in sorted(refs, key=str):
        notes.append(f"- KLD, ΔPPL and top-1 agreement: against the {md_text(ref)} model on {md_text(text)}"
                     + (f" ({tokens:,} tokens)" if isinstance(tokens, int) and tokens else "") + ".")
    for hw in sorted({(s.hardware, s.n_prompt, s.n_gen, s.threads, s.date[:10]) for s in m.speed.values()}, key=str):
        notes.append(f"- Speed and peak RAM: `edgeq bench`, {hw[1]}-token prompt, {hw[2]} tokens generated, "
                     f"batch 1, {hw[3]} threads, on {md_text(hw[0])} ({md_text(hw[4])}).")
    for f in files:
        if f.name in m.references and f.name not in m.quality:
            notes.append(f"- {md_code(f.name)} is the reference the others' KLD is measured against.")
    no_q = [f.name for f in files if f.name not in m.quality and f.name not in m.references]
    no_s = [f.name for f in files if f.name not in m.speed]
    if no_q:
        notes.append(f"- Not measured: quality of {', '.join(md_code(n) for n in no_q)}.")
    if no_s:
        notes.append(f"- Not measured: speed and RAM of {', '.join(md_code(n) for n in no_s)}.")
    return notes


def _made(mf: Manifest, folder: Path, files: list[Published]) -> list[str]:
    tuned: dict[str, Any] = mf.options.get("tuned") or {}  # type: ignore[assignment]
    lines = [f"- Source: {_source(mf)}; float type {md_text(mf.options.get('outtype', 'F16'))}, by the pinned "
             "`convert_hf_to_gguf.py`.", f"- Quantized by the pinned `llama-quantize` ({md_text(mf.llama_cpp)})."]
    for f in files:
        if f.record.type in ("F16", "BF16", "F32"):
            continue
        how = [md_code(f.record.type)]
        imat = _imatrix(folder / f.name)
        if imat:
            how.append(f"importance matrix {md_code('imatrix/' + imat['file'])} ({_count(imat['chunks'])} chunks of "
                       f"{md_text(imat['dataset'])})")
        t = tuned.get(f.name)
        if isinstance(t, dict):
            stem = f.name[: -len(".gguf")]
            how.append(f"per-tensor types chosen by `edgeq tune` {budget_words(t.get('budget'))}: recipe "
                       f"{md_code(stem + '.tensor-types.txt')} (sha256 {md_text(str(t.get('recipe_sha256'))[:16])}…), "
                       f"replay with {md_code(f'llama-quantize --imatrix … --tensor-type-file {stem}.tensor-types.txt')}; "
                       f"predicted KLD "
                       f"{_num(_float(t.get('predicted_kld')), '.4g')}, measured {_num(_float(t.get('measured_kld')), '.4g')}")
        lines.append(f"- {md_code(f.name)}: " + "; ".join(how) + ".")
    return lines


def _imatrix(path: Path) -> dict[str, Any] | None:
    """What llama-quantize recorded of the importance matrix in the file, or None without one."""
    md = read_header(path).metadata
    file = md.get("quantize.imatrix.file")
    if not file:
        return None
    ds = md.get("quantize.imatrix.dataset")
    return {"file": Path(str(file)).name, "chunks": md.get("quantize.imatrix.chunks_count"),
            "dataset": describe_dataset(str(ds)) if ds else "an unrecorded text"}


def _usage(repo_id: str, files: list[Published]) -> list[str]:
    quants = [f for f in files if f.record.type not in ("F16", "BF16", "F32")] or files
    tag = quants[0].record.type.split("-")[0]  # Q4_K_M-imat: the Hub's tag is the quant type in the name
    first, repo = _sh(quants[0].repo_names[0]), _sh(repo_id)
    if tag not in QUANT_TYPES:  # tuned-4.83bpw: no tag names it, so name the file
        return ["```bash", f"llama-cli -hf {repo} -hff {first}", f"hf download {repo} {first} --local-dir .",
                f'edgeq run {first} "Hello"', "```"]
    return ["```bash", f"llama-cli -hf {_sh(repo_id + ':' + tag)}", f"ollama run {_sh(f'hf.co/{repo_id}:{tag}')}",
            f"hf download {repo} {first} --local-dir .", f'edgeq run {first} "Hello"', "```"]


def _num(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def _float(x: object) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _count(x: object) -> str:
    return str(x) if isinstance(x, int) and not isinstance(x, bool) else "an unrecorded number of"


def _sh(word: str) -> str:
    """A word of a command the reader copies: shell-quoted (a file name cannot run anything) and on one line."""
    return shlex.quote(one_line(word))


def budget_words(budget: object) -> str:
    """What ``edgeq tune`` was asked for, in words: "for a file-size budget of 450 MiB", "for a predicted KLD of
    at most 0.02" … (its record: kind, what was asked, and the byte limit it became)."""
    b = budget if isinstance(budget, dict) else {}
    kind, asked, limit = b.get("kind"), b.get("asked"), b.get("bytes")
    if kind == "max-kld" and _float(asked) is not None:
        return f"for a predicted KLD of at most {_float(asked):g}"
    if kind == "bpw" and _float(asked) is not None:
        return f"for {_float(asked):g} bits per weight"
    if kind in ("size", "ram", "device") and asked is not None:
        shown = human_bytes(asked) if isinstance(asked, int) and not isinstance(asked, bool) else str(asked)
        what = {"size": "a file-size budget of", "ram": "a machine with RAM of", "device": "the device"}[kind]
        return f"for {what} {md_text(shown)}"
    if isinstance(limit, int) and limit > 0:
        return f"for a file of at most {human_bytes(limit)}"
    return "for a budget it did not record"
