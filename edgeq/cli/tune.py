"""`edgeq tune`: the click face of ``edgeq.tune``."""
from __future__ import annotations

import click

from .. import config
from ..output import echo, human_bytes, print_json, print_table
from ..tuning import tune as run_tune
from .options import (
    THREADS_DEFAULT,
    device_option,
    eval_tokens_option,
    json_option,
    progress_wanted,
    revision_option,
    some_strings,
    token_option,
)


@click.command()
@click.argument("source", required=False)
@click.option("--size", help="File-size budget with a unit: 450MiB, 1.2GiB, 100M.")
@click.option("--bpw", type=float, help="Budget in bits per weight of the whole file, e.g. 4.8.")
@click.option("--ram", help="RAM the model may use (with --ctx); the plan's memory model leaves the rest for the weights.")
@click.option("--ctx", type=click.IntRange(16), default=4096, show_default=True, help="Context for --ram/--for.")
@click.option("--for", "target", help="A device from `edgeq plan --device list` (its RAM, as --ram), as `ship --for`.")
@click.option("--max-kld", type=float, help="The smallest file whose predicted KLD is at most this.")
@click.option("--min-speed", type=float, default=1.0, show_default=True,
              help="pp and tg at least this × the stock recipe of the file's size on the target (0: KLD alone).")
@click.option("--types", callback=some_strings, help="Candidate tensor types, comma-separated (default: all tune knows).")
@click.option("-o", "--outdir", type=click.Path(file_okay=False), help="Output folder (default: models/<name>/).")
@click.option("--name", help="File-name stem (default: the repo or folder name).")
@click.option("--calibration", type=click.Path(dir_okay=False),
              help="Text for the importance matrix and the probes (default: Shakespeare that eval never scores).")
@click.option("--imatrix-chunks", type=click.IntRange(1), default=config.DEFAULT_IMATRIX_CHUNKS, show_default=True,
              help="512-token chunks of calibration text for the importance matrix.")
@click.option("--text", "eval_text", type=click.Path(dir_okay=False),
              help="Evaluation text for the verification (default: eval's, The Tempest).")
@eval_tokens_option
@click.option("--threads", type=click.IntRange(1, 1024), help=f"Threads ({THREADS_DEFAULT}).")
@device_option
@revision_option
@token_option
@json_option
def tune(source: str | None, size: str | None, bpw: float | None, ram: str | None, ctx: int, target: str | None,
         max_kld: float | None, min_speed: float, types: list[str] | None, outdir: str | None, name: str | None, calibration: str | None,
         imatrix_chunks: int, eval_text: str | None, eval_tokens: int, threads: int | None, device: str,
         revision: str | None, token: str | None, as_json: bool) -> None:
    """The GGUF of SOURCE with the least KLD for one budget, per-tensor types measured on this model."""
    res = run_tune(source, size=size, bpw=bpw, ram=ram, ctx=ctx, device=target, max_kld=max_kld, types=types or None,
                   outdir=outdir, name=name, calibration=calibration, imatrix_chunks=imatrix_chunks,
                   eval_text=eval_text, eval_tokens=eval_tokens, threads=threads, progress=progress_wanted(as_json),
                   revision=revision, token=token, min_speed=min_speed, compute_device=device)
    if as_json:
        print_json(res)
        return
    print_table("tune: verification on the evaluation text (KLD to the F16 file)",
                ["file", "size", "bits/w", "mean KLD", "ΔPPL %", "top-1 %", "predicted KLD", "pp tok/s", "tg tok/s"],
                [[("▶ " if r.tuned else "") + r.label, human_bytes(r.size_bytes), f"{r.bits_per_weight:.2f}",
                  f"{r.kld_mean:.4g}" if r.kld_mean is not None else "-",
                  f"{r.delta_ppl_pct:+.2f}" if r.delta_ppl_pct is not None else "-",
                  f"{r.top1_pct:.1f}" if r.top1_pct is not None else "-",
                  f"{r.predicted_kld:.4g}" if r.predicted_kld is not None else "",
                  f"{r.pp_tps:.0f}" if r.pp_tps else "-", f"{r.tg_tps:.1f}" if r.tg_tps else "-"] for r in res.rows])
    echo(res.verdict)
    if res.speed:
        echo(f"speed: against stock {res.speed['stock']}, predicted pp ×{res.speed['pp_ratio']}, tg ×{res.speed['tg_ratio']} "
             f"of its time ({res.speed['source']}){'' if res.speed['met'] else '; NOT met'}")
    echo(f"file: {res.output} (predicted {res.predicted_size_bytes} bytes, written {res.size_bytes})")
    echo(f"recipe: {res.recipe} (sha256 {res.recipe_sha256[:16]}…); replay: {res.replay}")
    echo(f"report and KLD-vs-size chart: {res.report}")
    echo("stages: " + ", ".join(f"{k} {v:.0f} s" for k, v in res.stages.items()))
