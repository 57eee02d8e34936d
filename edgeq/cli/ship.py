"""`edgeq ship`: the click face of ``edgeq.ship``."""
from __future__ import annotations

import click

from ..output import echo, print_json, print_table
from ..shipping import EmbeddingShipResult
from ..shipping import ship as run_ship
from .embeddings import print_embedding_ship
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
@click.option("--for", "target", help="The device it is for, from `edgeq plan --device` (default: this machine).")
@click.option("--ram", help="Or a machine of this much RAM (with --bandwidth), e.g. 8G.")
@click.option("--bandwidth", "bandwidth_gbps", type=float, help="Memory bandwidth of that machine, GB/s.")
@click.option("--ctx", type=click.IntRange(16), default=4096, show_default=True, help="Context it must fit at.")
@click.option("--quants", callback=some_strings, help="Stock candidates beside F16 (default: Q8_0,Q6_K,Q5_K_M,Q4_K_M).")
@click.option("--no-tune", is_flag=True, help="No `tune` file among the candidates.")
@click.option("--min-tps", type=float, help="Generation speed the pick must reach on the target (tok/s).")
@click.option("--max-kld", type=float, help="KLD to the F16 file the pick must stay within.")
@click.option("--prefer", type=click.Choice(["speed", "quality", "size"]), default="speed", show_default=True,
              help="The objective: the fastest near-lossless file (speed), the least KLD (quality) or the least RAM "
                   "(size) among those that fit and meet --min-tps/--max-kld.")
@click.option("-o", "--outdir", type=click.Path(file_okay=False), help="Deploy folder (default: dist/<name>/).")
@click.option("--work", "workdir", type=click.Path(file_okay=False),
              help="Where the candidates are made (default: models/<name>/, as `convert`).")
@click.option("--force", is_flag=True, help="Let -o be a folder of other files (a convert folder, say): its recorded "
                                            "files are replaced.")
@click.option("--push", metavar="ORG/NAME", help="Publish the deploy folder with `edgeq upload`.")
@click.option("--private", is_flag=True, help="With --push: create the repo private.")
@eval_tokens_option
@click.option("--threads", type=click.IntRange(1, 1024), help=f"Threads ({THREADS_DEFAULT}).")
@device_option
@revision_option
@token_option
@json_option
def ship(source: str | None, target: str | None, ram: str | None, bandwidth_gbps: float | None, ctx: int,
         quants: list[str] | None, no_tune: bool, min_tps: float | None, max_kld: float | None, prefer: str, outdir: str | None,
         workdir: str | None, force: bool, push: str | None, private: bool, eval_tokens: int, threads: int | None,
         device: str, revision: str | None, token: str | None, as_json: bool) -> None:
    """Make, measure and plan SOURCE's quants for a device, and write the deploy folder of the best that fits."""
    res = run_ship(source, target=target, ram=ram, bandwidth_gbps=bandwidth_gbps, ctx=ctx, quants=quants or None,
                   tune=not no_tune, min_tps=min_tps, max_kld=max_kld, outdir=outdir, workdir=workdir, push=push, private=private,
                   token=token, threads=threads, eval_tokens=eval_tokens, revision=revision,
                   progress=progress_wanted(as_json), force=force, prefer=prefer, device=device)
    if as_json:
        print_json(res)
        return
    if isinstance(res, EmbeddingShipResult):
        return print_embedding_ship(res)
    here = res.target["here"]
    print_table(f"ship: {res.target['name']} at ctx {res.ctx:,}",
                ["file", "MiB", "KLD", "ΔPPL %", "tg tok/s here (min–max)", "pp tok/s here", "RAM on target (pred.)",
                 "tg tok/s on target" + ("" if here else " (pred.)"), "fits", "front"],
                [[("▶ " if o.label == res.chosen else "") + o.label, f"{o.size_bytes / 2**20:.1f}",
                  "reference" if o.label == "F16" else (f"{o.kld_mean:.4g}" if o.kld_mean is not None else "-"),
                  f"{o.delta_ppl_pct:+.2f}" if o.delta_ppl_pct is not None else "-",
                  _range(o.tg_tps_here, o.tg_low_target, o.tg_high_target), f"{o.pp_tps_here:.0f}" if o.pp_tps_here else "-",
                  f"{o.ram_target_bytes / 2**20:.0f} MiB", f"{o.tg_tps_target:.1f}", "yes" if o.fits else "no",
                  f"no: {o.dominated_by}" if o.dominated_by else "yes"] for o in res.options])
    echo(res.sentence + (f" Runner-up: {res.runner_up}." if res.runner_up else ""))
    for n in res.notes:
        echo(f"note: {n}")
    echo(f"deploy folder: {res.folder} (./run.sh \"prompt\"); verified")
    if res.pushed:
        echo(f"published: {res.pushed}")
    echo("stages: " + ", ".join(f"{k} {v:.0f} s" for k, v in res.stages.items()))


def _range(tps: float | None, lo: float | None, hi: float | None) -> str:
    if not tps:
        return "-"
    return f"{tps:.1f}" + (f" ({lo:.1f}–{hi:.1f})" if lo is not None and hi is not None else "")
