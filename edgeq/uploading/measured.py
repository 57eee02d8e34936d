"""What edgeq measured about each file of a folder: quality from ``eval``/``tune`` results, speed and RAM from
``bench`` results, each with the conditions it was measured under.

A result names the files it measured by path; a row counts for a file only when the name *and* the size in
bytes match the manifest's, so a result about another file of the same name (remade with other options, or
from another llama.cpp) never reaches a model card.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import schema_of
from ..reporting.tables import first_prompt_batch1

# Where results are looked for besides --results: the folder itself, the current folder (where `edgeq bench`
# and `edgeq eval` write by default) and the folder edgeq's own benchmark scripts write to.
SEARCH_HERE = (".", "benchmarks/results")
KINDS = ("edgeq-bench/", "edgeq-eval/", "edgeq-tune/", "edgeq-eval-embeddings/", "edgeq-bench-embeddings/")


@dataclass
class Quality:
    kld_mean: float | None
    delta_ppl_pct: float | None
    top1_pct: float | None
    reference: str  # what the KLD is measured against, e.g. "fp32 (HF)" or "F16"
    text: str  # the evaluation text
    tokens: int | None
    result: str  # the results file it came from


@dataclass
class Speed:
    pp_tps: float
    tg_tps: float
    peak_rss_bytes: int | None
    n_prompt: int
    n_gen: int
    threads: int
    hardware: str  # "AMD EPYC, 2 cores, x86_64 Linux; llama.cpp …"
    date: str
    result: str


@dataclass
class Measured:
    quality: dict[str, Quality] = field(default_factory=dict)  # file name -> its figures
    speed: dict[str, Speed] = field(default_factory=dict)
    results: list[str] = field(default_factory=list)  # every results file that gave a figure
    references: set[str] = field(default_factory=set)  # files an eval measured the others against


def result_files(folder: Path, given: list[Path], here: Path) -> list[Path]:
    """The bench/eval/tune results to read: ``given`` (files, or folders of them), the folder's own (and its
    ``results/``, where ``ship`` keeps them), and those in the ``SEARCH_HERE`` places under ``here``; each once."""
    places = [*given, folder, folder / "results", *[here / p for p in SEARCH_HERE]]
    out: list[Path] = []
    for p in places:
        files = sorted(p.glob("*.json")) if p.is_dir() else [p] if p.is_file() else []
        for f in files:
            if f.resolve() not in {o.resolve() for o in out} and schema_of(f).startswith(KINDS):
                out.append(f)
    return out


def measure(files: dict[str, int], results: list[Path]) -> Measured:
    """The figures of ``results`` about ``files`` ({name: size in bytes}); the latest result wins for each."""
    m = Measured()
    dated = sorted(((_date(d), p, d) for p in results if (d := _load(p)) is not None), key=lambda x: x[0])
    for _, path, d in dated:
        schema = str(d["schema"])
        got = (_bench(d, files, str(path), m) if schema.startswith("edgeq-bench/")
               else _eval(d, files, str(path), m) if schema.startswith("edgeq-eval/")
               else _tune(d, files, str(path), m) if schema.startswith("edgeq-tune/")
               else False)  # a sentence-embedding model's results: its card reads them (embedding_card)
        if got and str(path) not in m.results:
            m.results.append(str(path))
    return m


def _load(path: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def _date(d: dict[str, Any]) -> str:
    return str(d.get("created") or (d.get("environment") or {}).get("date") or "")


def _match(path: str | None, size: int | None, files: dict[str, int]) -> str | None:
    name = Path(path or "").name
    return name if name in files and size == files[name] else None


def _bench(d: dict[str, Any], files: dict[str, int], src: str, m: Measured) -> bool:
    env = d.get("environment") or {}
    versions = env.get("versions") or {}
    hardware = (f"{env.get('cpu') or 'unknown CPU'}, {env.get('physical_cores')} cores, {env.get('machine')} "
                f"{str(env.get('os') or '').split(' ')[0]}; {versions.get('llama.cpp') or 'llama.cpp'}")
    if env.get("metal"):
        hardware += ", Metal"
    got = False
    for r in first_prompt_batch1([r for r in d.get("runs") or [] if r.get("backend") == "llama.cpp"]):
        name = _match(r.get("path"), r.get("file_size_bytes"), files)
        if name is None or not r.get("pp_tps") or not r.get("tg_tps"):
            continue
        m.speed[name] = Speed(float(r["pp_tps"]["median"]), float(r["tg_tps"]["median"]), r.get("peak_rss_bytes"),
                              int(r["n_prompt"]), int(r["n_gen"]), int(r["threads"]), hardware,
                              str(env.get("date") or ""), src)
        got = True
    return got


def _eval(d: dict[str, Any], files: dict[str, int], src: str, m: Measured) -> bool:
    if d.get("task") != "ppl" or not d.get("reference"):
        return False  # the card's quality columns are KLD, ΔPPL and top-1 against a reference
    data = d.get("data") or {}
    got = False
    for i, r in enumerate(d.get("rows") or []):
        model = r.get("model") or {}
        name = _match(model.get("path"), model.get("size_bytes"), files)
        if name is not None and i == 0 and r.get("kld_mean") is None:  # eval puts its reference first
            m.references.add(name)
            got = True
        if name is None or r.get("kld_mean") is None:
            continue
        m.quality[name] = Quality(r["kld_mean"], r.get("delta_ppl_pct"), r.get("top1_pct"), str(d["reference"]),
                                  str(data.get("source") or ""), data.get("tokens_used"), src)
        got = True
    return got


def _tune(d: dict[str, Any], files: dict[str, int], src: str, m: Measured) -> bool:
    got = False
    for r in d.get("rows") or []:
        name = _match(r.get("path"), r.get("size_bytes"), files)
        if name is None or r.get("kld_mean") is None:
            continue
        m.quality[name] = Quality(r["kld_mean"], r.get("delta_ppl_pct"), r.get("top1_pct"), "F16 GGUF",
                                  "the evaluation text of edgeq tune's verification (never its calibration text)",
                                  None, src)
        got = True
    return got
