"""`edgeq ship` for a sentence-embedding model: convert, measure, plan, pick, and the deploy folder.

The generator's stages, with what an embedding model has instead: quality is `edgeq eval embeddings` (cosine and
retrieval agreement against sentence-transformers fp32, the checkpoint itself being the reference), speed is
embeddings/s (`edgeq bench`'s embedding path, batch 1 and a batch), the plan is ``embeddings.plan``'s (RAM at
the model's context, no KV cache), and the pick is the same decision rule with the cosine distance for KLD.
Two stages do not apply, and the result says so: tune (it ranks tensors by the KLD of next-token logits, which an
encoder has none of) and the importance matrix (llama-imatrix measures a generator's logits the same way).
"""
from __future__ import annotations

import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import manifest
from ..conversion import convert
from ..embeddings.plan import DEFAULT_MIN_COSINE, EmbeddingOption, plan_embeddings
from ..embeddings.quality import evaluate_embeddings
from ..embeddings.speed import bench_embeddings
from ..errors import EdgeqError, VerifyFailed
from ..files import atomic_output, place_file, write_json_atomic
from ..sources import Source
from ..uploading import upload
from ..uploading.card import Published
from ..uploading.embedding_card import embedding_head, measure, render

SCHEMA = "edgeq-ship-embeddings/1"
STOCK = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M")  # beside the F16 reference
BATCHES = [1, 32]
# Enough for the pick, a fraction of eval's defaults: cosine and retrieval on 16 queries among 64
# passages, speed over 32 (a ship measures every candidate twice over, on llama.cpp alone).
QUERIES, PASSAGES, BENCH_TEXTS = 16, 64, 32
NOT_APPLIED = ("no tuned file and no importance matrix: both rank tensors by the KL divergence of next-token logits, "
               "and an embedding model has no logits (quality here is the cosine with fp32).")


@dataclass
class EmbeddingShipResult:
    schema: str
    source: dict[str, object]
    target: dict[str, object]
    ctx: int
    folder: str
    chosen: str | None
    sentence: str
    options: list[EmbeddingOption] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    pushed: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def ship_embedding(src: Source, *, target: str | None, ram_bytes: int | None, quants: list[str] | None,
                   outdir: str | Path | None, workdir: str | Path | None, push: str | None, private: bool,
                   token: str | None, threads: int | None, progress: bool, prefer: str, min_eps: float | None,
                   min_cosine: float = DEFAULT_MIN_COSINE) -> EmbeddingShipResult:
    """Make, measure and plan the candidates of the embedding model ``src``; write the deploy folder of the pick."""
    stages: dict[str, float] = {}
    t = time.perf_counter()
    stock = [q for q in (quants or STOCK) if q != "F16"]
    res = convert(src, quants=["F16", *stock], outdir=workdir, token=token, threads=threads, progress=progress)
    work = Path(res.outdir)
    files = [str(o.path) for o in res.outputs]
    stages["convert"] = time.perf_counter() - t
    t = time.perf_counter()
    ev = evaluate_embeddings(files, quants=[], reference=str(src.path), n_queries=QUERIES, n_passages=PASSAGES,
                             threads=threads, progress=progress)
    eval_path = work / "ship" / "eval-embeddings.json"
    write_json_atomic(_made(eval_path), ev.to_dict())
    stages["quality"] = time.perf_counter() - t
    t = time.perf_counter()
    be = bench_embeddings(files, quants=[], st_variants=[], batches=BATCHES, n_texts=BENCH_TEXTS, threads=threads,
                          progress=progress)
    bench_path = work / "ship" / "bench-embeddings.json"
    write_json_atomic(bench_path, be.to_dict())
    stages["speed"] = time.perf_counter() - t
    t = time.perf_counter()
    plan = plan_embeddings(str(work / Path(files[0]).name), quants=[o.type for o in res.outputs], device=target,
                           ram=ram_bytes, calibrate=None if target else bench_path, eval_results=[eval_path],
                           min_eps=min_eps, min_cosine=min_cosine, prefer=prefer)
    stages["plan and pick"] = time.perf_counter() - t
    here = target is None
    notes = [NOT_APPLIED, *plan.notes]
    if not here:
        notes.append(f"{target} is not this machine: its embeddings/s are predicted from its compute; cosine and every "
                     "'here' figure were measured on this machine.")
    folder = Path(outdir) if outdir else Path("dist") / work.name
    result = EmbeddingShipResult(SCHEMA, dict(res.source), {"name": plan.device["name"], "here": here}, plan.ctx,
                                 str(folder), plan.pick, plan.sentence, plan.options, stages, notes)
    if plan.pick is None:
        raise EdgeqError(plan.sentence, hint="Pass a bigger target (--for/--ram), or looser --min-tps.")
    t = time.perf_counter()
    chosen = next(Path(f) for f, o in zip(files, res.outputs) if o.type == plan.pick)
    repo = push or f"your-name/{src.name}-GGUF"
    _write_folder(folder, work, chosen, result, [eval_path, bench_path], plan.to_dict(), repo)
    stages["folder"] = time.perf_counter() - t
    if push:
        up = upload(folder, push, private=private, token=token, progress=progress)
        result.pushed = up.pull_request_url or up.commit_url
    write_json_atomic(folder / "ship.json", result.to_dict())
    return result


def _made(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write_folder(folder: Path, work: Path, src: Path, result: EmbeddingShipResult, results: list[Path],
                  plan: dict[str, Any], repo_id: str) -> None:
    """The chosen file, its manifest, the card, the results it rests on and ``run.sh``; then verify."""
    old = manifest.claim(folder, "ship", force=False)
    folder.mkdir(parents=True, exist_ok=True)
    wmf = manifest.load(work)
    assert wmf is not None and src.name in wmf.files  # convert recorded it
    manifest.remove_replaced(folder, old, src.name, force=False)
    place_file(src, folder / src.name)
    mf = manifest.Manifest(source=wmf.source, llama_cpp=wmf.llama_cpp,
                           options={**wmf.options, "ship": {"target": result.target, "ctx": result.ctx,
                                                            "chosen": result.chosen}},
                           files={src.name: wmf.files[src.name]})
    manifest.save(folder, mf)
    (folder / "results").mkdir(exist_ok=True)
    saved = []
    for p in results:
        saved.append(folder / "results" / p.name)
        saved[-1].write_bytes(p.read_bytes())
    write_json_atomic(folder / "results" / "plan-embeddings.json", plan)
    head = embedding_head(folder, [src.name])
    assert head is not None  # an embedding model's file
    em = measure(head, {src.name: wmf.files[src.name].size_bytes}, saved)
    preface = ["## Recommended", "", f"For {'this machine' if result.target['here'] else result.target['name']} "
               f"at a context of {result.ctx}: **{result.chosen}**. {result.sentence}", "",
               *[f"> {n}" for n in result.notes], ""]
    card = render(mf, folder, repo_id, [Published(src.name, mf.files[src.name], [src.name])], em, [], preface)
    with atomic_output(folder / "README.md") as tmp:
        tmp.write_text(card, encoding="utf-8")
    norm = "--embd-normalize 2" if head.normalize else "--embd-normalize -1"
    with atomic_output(folder / "run.sh") as tmp:
        tmp.write_text("#!/bin/sh\n# Written by edgeq: one text's embedding with llama.cpp's llama-embedding (on PATH, or "
                       "LLAMA_EMBEDDING=/path/to/it).\n"
                       f'here="$(cd "$(dirname "$0")" && pwd)"\nexec "${{LLAMA_EMBEDDING:-llama-embedding}}" -m '
                       f'"$here/"{shlex.quote(src.name)} --pooling {head.pooling} {norm} -p "${{1:-Hello}}"\n',
                       encoding="utf-8")
        tmp.chmod(0o755)
    check = manifest.verify(folder)
    if not check.passed:
        raise VerifyFailed(f"the deploy folder {folder} does not match its manifest.", hint="Run the same ship again.")


__all__ = ["EmbeddingShipResult", "ship_embedding"]
