"""Sentence-embedding models on the command line: `edgeq eval embeddings`, and what `edgeq bench`, `edgeq plan` and
`edgeq ship` print for one (numpy and the models load inside the library's functions, never at import)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..embeddings import evaluate_embeddings
from ..embeddings.plan import plan_embeddings
from ..embeddings.speed import EmbeddingBench, bench_embeddings
from ..errors import EdgeqError
from ..files import write_json_atomic
from ..output import echo, human_bytes, note, print_json, print_table
from .options import THREADS_DEFAULT, json_option, progress_wanted, revision_option, strings, token_option

if TYPE_CHECKING:
    from ..shipping.embedding import EmbeddingShipResult


@click.command("embeddings")
@click.argument("models", nargs=-1, required=True)
@click.option("--quants", default="F16,Q8_0,Q4_K_M", show_default=True, callback=strings,
              help="Types to convert a checkpoint to (and evaluate); '' for the given GGUFs only.")
@click.option("--hf", "hf_variants", default="", show_default=True, callback=strings,
              help="sentence-transformers variants to score beside the files: bf16, bnb-int8 (fp32 is the reference).")
@click.option("--reference", metavar="CHECKPOINT",
              help="The sentence-transformers checkpoint to compare with (default: the source, or the one the "
                   "GGUFs' manifest names).")
@click.option("--queries", "n_queries", type=click.IntRange(1), default=64, show_default=True,
              help="Queries (first lines of speeches).")
@click.option("--passages", "n_passages", type=click.IntRange(2), default=256, show_default=True,
              help="Passages the queries search (speeches of As You Like It).")
@click.option("-k", type=click.IntRange(1), default=10, show_default=True, help="Neighbours compared per query.")
@click.option("-t", "--threads", type=click.IntRange(1, 1024), help=f"Threads ({THREADS_DEFAULT}).")
@click.option("-o", "--output", default="edgeq-eval-embeddings.json", show_default=True,
              type=click.Path(dir_okay=False))
@revision_option
@token_option
@json_option
def eval_embeddings(models: tuple[str, ...], quants: list[str], hf_variants: list[str], reference: str | None,
                    n_queries: int, n_passages: int, k: int, threads: int | None, output: str, revision: str | None,
                    token: str | None, as_json: bool) -> None:
    """Cosine and retrieval agreement of a sentence-embedding model's GGUFs with sentence-transformers fp32
    (MODELS: a checkpoint, `minilm`, GGUFs)."""
    res = evaluate_embeddings(list(models), quants=quants, hf_variants=hf_variants, reference=reference,
                              n_queries=n_queries, n_passages=n_passages, k=k, threads=threads,
                              progress=progress_wanted(as_json), revision=revision, token=token)
    write_json_atomic(Path(output), res.to_dict())
    if as_json:
        print_json(res)
        return
    t = res.texts
    rows = [[r.label, human_bytes(r.size_bytes) if r.size_bytes else "-",
             f"{r.bits_per_weight:.2f}" if r.bits_per_weight else "-", f"{r.cos_mean:.6f}", f"{r.cos_min:.6f}",
             f"{100 * r.top1_agreement:.1f}", f"{100 * r.topk_agreement:.1f}", f"{r.seconds:.1f}"] for r in res.rows]
    head = res.reference["head"]
    print_table(f"edgeq eval embeddings · {res.model} · {t['queries']} queries, {t['passages']} passages, k={t['k']} "
                f"· reference: sentence-transformers fp32 ({head['pooling']} pooling"
                f"{', normalised' if head['normalize'] else ''})",
                ["model", "size", "bits/w", "mean cosine", "worst cosine", "same top-1 %", f"top-{t['k']} overlap %",
                 "seconds"], rows)
    note(f"texts: {t['source']}")
    note(f"results: {output}")


def print_embedding_bench(res: EmbeddingBench) -> None:
    """The bench table of an embedding model, then one verdict per quantized file and batch size."""
    rows = []
    for r in res.runs:
        if r.status != "ok" or r.texts_per_s is None:
            rows.append([r.backend, r.variant, r.batch, "failed", r.reason or "", "", "", "", ""])
            continue
        s = r.texts_per_s
        rows.append([r.backend, r.variant, r.batch, f"{r.load_s:.2f}", f"{s.median:.1f} ({s.min:.0f}–{s.max:.0f})",
                     f"{r.latency_ms:.1f}", human_bytes(r.peak_rss_bytes or 0),
                     human_bytes(r.size_bytes) if r.size_bytes else "-",
                     f"{r.bits_per_weight:.2f}" if r.bits_per_weight else "-"])
    st = res.settings
    print_table(f"edgeq bench · {res.model} (sentence embeddings) · {res.environment['cpu']} · {st['threads']} threads"
                f" · {st['texts']} passages × {st['reps']} passes",
                ["backend", "variant", "batch", "load s", "embeddings/s (min–max)", "ms/call", "peak RSS", "size",
                 "bits/w"], rows)
    for v in res.verdicts:
        echo("• " + v)


def bench_embedding_models(models: list[str], *, quants: list[str], hf_variants: list[str], threads: int | None,
                           batches: list[int], reps: int, output: str, as_json: bool, revision: str | None,
                           token: str | None) -> None:
    """`edgeq bench` on sentence-embedding models: run, save, print (``bench`` hands them over)."""
    st = [v for v in hf_variants if v in ("fp32", "bf16", "bnb-int8", "bnb-nf4")]
    res = bench_embeddings(models, quants=quants, st_variants=st, batches=batches, reps=reps, threads=threads,
                           progress=progress_wanted(as_json), revision=revision, token=token)
    write_json_atomic(Path(output), res.to_dict())
    if as_json:
        print_json(res)
        return
    print_embedding_bench(res)
    note(f"results: {output}")


def plan_embedding_model(source: str, *, quants: list[str], ctx: int, device: str | None, ram: int | None,
                         calibrate: str | None, eval_results: list[str], min_eps: float | None, min_cosine: float,
                         prefer: str, as_json: bool) -> None:
    """`edgeq plan` on a sentence-embedding model (``plan`` hands it over): the table, the notes, the pick."""
    res = plan_embeddings(source, quants=quants, ctx=ctx, device=device, ram=ram, calibrate=calibrate,
                          eval_results=list(eval_results), min_eps=min_eps, min_cosine=min_cosine, prefer=prefer)
    if as_json:
        print_json(res)
    else:
        rows = [[o.quant, human_bytes(o.file_size_bytes), f"{o.bits_per_weight:.2f}", human_bytes(o.total_bytes),
                 "yes" if o.fits else "NO", f"{o.eps:.1f}" + ("" if o.speed_from == "measured" else "*"),
                 f"{o.pp:.1f}" if o.pp else "-", f"{o.cos_mean:.5f}" if o.cos_mean is not None else "-",
                 f"{100 * o.topk_agreement:.1f}" if o.topk_agreement is not None else "-",
                 "yes" if o.dominated_by is None else f"no ({o.dominated_by})"] for o in res.options]
        m = res.model
        print_table(f"edgeq plan · {m['name']} (sentence embeddings, dimension {m['n_embd']}) · {res.device['name']} "
                    f"({human_bytes(res.budget_bytes)} usable) · ctx {res.ctx}",
                    ["quant", "size", "bits/w", f"RAM @{res.ctx}", "fits", "emb/s b1", "emb/s batch", "cosine",
                     "top-k %", "front"], rows)
        for n in res.notes:
            note("• " + n)
        echo(f"Recommendation: {res.sentence}")
    if res.pick is None:
        raise EdgeqError(res.sentence, hint="Pass a bigger --ram or --device, or a smaller --ctx.")


def print_embedding_ship(res: EmbeddingShipResult) -> None:
    """What `edgeq ship` prints for a sentence-embedding model."""
    rows = [[("▶ " if o.quant == res.chosen else "") + o.quant, f"{o.file_size_bytes / 2**20:.1f}",
             f"{o.cos_mean:.5f}" if o.cos_mean is not None else "-",
             f"{100 * o.topk_agreement:.1f}" if o.topk_agreement is not None else "-",
             f"{o.eps:.1f}" + ("" if o.speed_from == "measured" else " (pred.)"), f"{o.pp:.1f}" if o.pp else "-",
             f"{o.total_bytes / 2**20:.0f} MiB", "yes" if o.fits else "no",
             f"no: {o.dominated_by}" if o.dominated_by else "yes"] for o in res.options]
    print_table(f"ship: {res.target['name']} at ctx {res.ctx} (sentence embeddings)",
                ["file", "MiB", "mean cosine", "top-k %", "emb/s b1", "emb/s batch", "RAM at ctx", "fits", "front"],
                rows)
    echo(res.sentence)
    for n in res.notes:
        echo(f"note: {n}")
    echo(f"deploy folder: {res.folder} (./run.sh \"text\"); verified")
    if res.pushed:
        echo(f"published: {res.pushed}")
    echo("stages: " + ", ".join(f"{k} {v:.0f} s" for k, v in res.stages.items()))
