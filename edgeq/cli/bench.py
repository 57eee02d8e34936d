"""Commands that measure: bench, report."""
from __future__ import annotations

from pathlib import Path

import click

from .. import reporting
from ..benchmarking import bench as run_bench
from ..benchmarking import failure
from ..benchmarking.eta import human_seconds
from ..benchmarking.image import as_dicts, bench_image, check_image_inputs, failed
from ..benchmarking.matrix import (
    DEFAULT_BATCHES,
    DEFAULT_N_GEN,
    DEFAULT_N_PROMPT,
    DEFAULT_QUANTS,
    DEFAULT_REPS,
    HF_VARIANTS,
)
from ..benchmarking.results import BenchResults, RunResult, Stat
from ..embeddings import is_embedding_model
from ..files import write_json_atomic
from ..llamacpp.rpc import layer_ranges
from ..output import echo, human_bytes, note, print_json, print_table, to_jsonable
from ..sources import resolve
from .embeddings import bench_embedding_models
from .options import (
    THREADS_DEFAULT,
    integers,
    json_option,
    lora_options,
    progress_wanted,
    revision_option,
    rpc_options,
    strings,
    token_option,
)


@click.command()
@click.argument("models", nargs=-1)
@click.option("--quants", default=",".join(DEFAULT_QUANTS), show_default=True, callback=strings,
              help="Types to convert an HF source to (and bench); '' to bench the checkpoint only.")
@click.option("--hf", "hf_variants", default=",".join(HF_VARIANTS), show_default=True, callback=strings,
              help="transformers variants for an HF source; '' for none.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, metal (Apple) or cuda.")
@click.option("-t", "--threads", type=click.IntRange(1, 1024), help=f"Threads ({THREADS_DEFAULT}).")
@click.option("-p", "n_prompt", type=click.IntRange(1), default=DEFAULT_N_PROMPT, show_default=True, help="Prompt tokens.")
@click.option("-n", "n_gen", type=click.IntRange(1), default=DEFAULT_N_GEN, show_default=True, help="Generated tokens.")
@click.option("--batch", default=",".join(map(str, DEFAULT_BATCHES)), show_default=True, callback=integers, help="Independent sequences per run, comma-separated.")
@click.option("-r", "reps", type=click.IntRange(1), default=DEFAULT_REPS, show_default=True, help="Timed repetitions after a warm-up.")
@click.option("--prompt-file", type=click.Path(), help="Your own prompt text (default: English and Hindi).")
@click.option("--check-llama-bench", is_flag=True, help="Cross-check with llama-bench on the same files (±10%).")
@click.option("-o", "--output", default="edgeq-bench.json", show_default=True, type=click.Path(dir_okay=False),
              help="Results JSON, saved after every run.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write a CSV (llama-bench field names).")
@click.option("--image", type=click.Path(dir_okay=False),
              help="Also time encoding this image with each GGUF's projector (a vision-language model): ms and tokens.")
@click.option("--mmproj", type=click.Path(dir_okay=False), help="The projector for --image (default: each model's own).")
@lora_options
@rpc_options
@revision_option
@token_option
@json_option
def bench(models: tuple[str, ...], quants: list[str], hf_variants: list[str], device: str, threads: int | None,
          n_prompt: int, n_gen: int, batch: list[int], reps: int, prompt_file: str | None, check_llama_bench: bool, output: str,
          csv_path: str | None, image: str | None, mmproj: str | None, lora: str | None, lora_scale: float, rpc: str | None, no_local: bool, tensor_split: list[float] | None,
          revision: str | None, token: str | None, as_json: bool) -> None:
    """Benchmark MODELS (GGUF files, folders of them, HF checkpoints; default: the embedded model).

    A sentence-embedding model (`minilm`, a sentence-transformers checkpoint, its GGUFs) is measured in
    embeddings per second on llama.cpp and sentence-transformers (-p, -n and the prompts do not apply)."""
    if models and all(is_embedding_model(m) for m in models):
        return bench_embedding_models(list(models), quants=quants, hf_variants=hf_variants, threads=threads,
                                      batches=batch, reps=reps, output=output, as_json=as_json, revision=revision,
                                      token=token)
    if image:  # refused before any run: the image, and a projector for each GGUF given
        _check_image(list(models), image, mmproj)
    res = run_bench(list(models), quants=quants, hf_variants=hf_variants, device=device,
                    threads=threads, n_prompt=n_prompt, n_gen=n_gen, batches=batch, reps=reps,
                    prompt_file=prompt_file, check_llama_bench=check_llama_bench, output=output,
                    progress=progress_wanted(as_json), rpc=rpc, no_local=no_local, tensor_split=tensor_split or None,
                    revision=revision, token=token, csv=csv_path, lora=lora, lora_scale=lora_scale)
    if image:
        _bench_image(res, image, mmproj, reps=reps, threads=threads, output=output)
    err = failure(res)
    if as_json:
        print_json(res)
        if err:  # the results are the JSON document; the error goes to stderr, the code says it
            echo(f"Error: {err}", err=True)
            raise click.exceptions.Exit(err.exit_code)
        return
    print_results(res)
    note(f"results: {output}" + (f", {csv_path}" if csv_path else ""))
    failed = sum(r.status == "failed" for r in res.runs)
    if err:
        raise err
    if failed:
        note(f"{failed} of {len(res.runs)} runs failed (see the table); the others were measured")


def _check_image(models: list[str], image: str, mmproj: str | None) -> None:
    check_image_inputs([f for m in models for f in resolve(m, fetch=False).ggufs()], image, mmproj)


def _bench_image(res: BenchResults, image: str, mmproj: str | None, *, reps: int, threads: int | None,
                 output: str) -> None:
    """bench --image: each measured GGUF's image encoding, added to the results (and their file)."""
    ggufs = list(dict.fromkeys(Path(r.path) for r in res.runs if r.backend == "llama.cpp" and r.status == "ok"))
    runs = bench_image(ggufs, image, reps=reps, threads=threads, mmproj=mmproj)
    res.images = as_dicts(runs)
    write_json_atomic(Path(output), to_jsonable(res))
    if err := failed(runs):
        raise err


def _print_images(res: BenchResults) -> None:
    if not res.images:
        return
    rows = [[Path(i["model"]).name, Path(i["mmproj"]).name, i["image_tokens"], i["image_chunks"],
             f"{i['encode_ms_median']:.1f} ({min(i['encode_ms']):.1f}–{max(i['encode_ms']):.1f})",
             i["image_tokens_per_s"] or "-"] if i["status"] == "ok" else
            [Path(i["model"]).name, Path(i["mmproj"]).name, "failed", i["reason"] or "", "", ""] for i in res.images]
    print_table("image (bench --image)", ["model", "projector", "image tokens", "slices",
                                          "encode ms (min–max)", "image tok/s"], rows)


def _stat(s: Stat | None) -> str:
    return f"{s.median:.1f} ({s.min:.0f}–{s.max:.0f})" if s else "-"


def print_results(res: BenchResults) -> None:
    roof = {(r["backend"], r["variant"], r["batch"], r["prompt"]): r["fraction"]
            for r in res.roofline.get("rows", [])}
    rows = []
    for r in res.runs:
        if r.status != "ok":
            rows.append([r.backend, r.variant, r.batch, r.prompt, r.status, r.reason or "", "", "", "", "", ""])
            continue
        frac = roof.get((r.backend, r.variant, r.batch, r.prompt))
        rows.append([r.backend, r.variant, r.batch, r.prompt, f"{r.load_s:.1f}", _stat(r.pp_tps), _stat(r.tg_tps),
                     f"{r.ms_per_token:.1f}", human_bytes(r.peak_rss_bytes or 0),
                     f"{r.bits_per_weight:.2f}" if r.bits_per_weight else "-", f"{frac:.0%}" if frac else "-"])
    env = res.environment
    bw = (res.roofline.get("bandwidth") or {}).get("read_gbps")
    rpc = res.settings.get("rpc")
    print_table(f"edgeq bench · {env['cpu']} · {env['threads']} threads · read bandwidth {bw} GB/s"
                + (f" · RPC {', '.join(rpc)}" if rpc else ""),
                ["backend", "variant", "batch", "prompt", "load s", "pp tok/s (min–max)", "tg tok/s (min–max)",
                 "ms/token", "peak RSS", "bits/w", "roofline"], rows)
    _print_placement(res.runs)
    _print_images(res)
    for v in res.verdicts:
        echo("• " + v.sentence)
    readings = (res.roofline.get("bandwidth") or {}).get("readings_gbps") or []
    if len(readings) > 1:
        echo(f"read bandwidth: best of {len(readings)} readings ({', '.join(f'{g:g}' for g in readings)} GB/s)"
                   + (f"; the matrix took {human_seconds(res.timing['matrix_s'])}" if res.timing.get("matrix_s") else ""))
    for w in res.roofline.get("warnings", []):
        note(f"warning: {w}")
    if res.busy:
        note(f"warning: {res.busy}")
    for c in res.llama_bench:
        flag = "agrees" if c.agrees else "DISAGREES (>10%)"
        echo(f"llama-bench {c.variant}: pp {c.llama_bench_pp_tps:.1f} vs ours {c.ours_pp_tps:.1f} "
                   f"({c.pp_diff:+.0%}), tg {c.llama_bench_tg_tps:.1f} vs ours {c.ours_tg_tps:.1f} ({c.tg_diff:+.0%}): {flag}")
    if res.interrupted:
        note("interrupted: the table shows the runs finished before Ctrl-C")


def _print_placement(runs: list[RunResult]) -> None:
    """Where each RPC run put its layers (one line per device, first prompt only)."""
    seen = set()
    for r in runs:
        if not r.placement or (r.path, r.batch) in seen:
            continue
        seen.add((r.path, r.batch))
        n_layer = max(x for p in r.placement for x in p["layers"] or [0])
        for p in r.placement:
            where = f"RPC {p['endpoint']}" if p["endpoint"] else "this machine"
            echo(f"{r.variant} batch {r.batch} · {where}: layers {layer_ranges(p['layers'], n_layer)}, "
                       f"model {p['model_mib']:.1f} MiB, KV {p['kv_mib']:.1f} MiB")


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--outdir", default="report", show_default=True, type=click.Path(file_okay=False))
@json_option
def report(results: tuple[str, ...], outdir: str, as_json: bool) -> None:
    """Write a Markdown report with PNG charts from RESULTS JSON files of `edgeq bench`, `eval`, `tune` and `plan --json`."""
    out = reporting.report(results, outdir)
    if as_json:
        print_json(out)
    else:
        echo(out.markdown)
