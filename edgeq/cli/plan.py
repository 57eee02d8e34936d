"""`edgeq plan`: which quant fits this machine (or a named device), its RAM, speed and quality."""
from __future__ import annotations

from typing import Any

import click

from .. import planning as planlib
from ..embeddings import is_embedding_model
from ..errors import UsageError
from ..output import echo, human_bytes, note, print_json, print_table
from ..planning import devices
from ..planning.devices import parse_size
from ..planning.planner import DEFAULT_QUANTS, PlanResult
from .embeddings import plan_embedding_model
from .options import json_option, revision_option, strings, token_option


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None

    try:
        return parse_size(value)
    except UsageError as e:
        if param.name == "headroom" and value.strip() == "0":
            return 0
        raise click.BadParameter(e.message) from e


@click.command()
@click.argument("source", required=False)
@click.option("--quants", default=",".join(DEFAULT_QUANTS), show_default=True, help="Types to plan.")
@click.option("--ctx", type=int, default=4096, show_default=True, help="Context length (tokens) to hold.")
@click.option("--cache-type", type=click.Choice(["f16", "q8_0"]), default="f16", show_default=True,
              help="KV cache type (llama.cpp -ctk/-ctv).")
@click.option("--device", help="A named device (m1-8gb, pi5-8gb, …; `--device list` shows them). Default: this machine.")
@click.option("--ram", callback=_size, help="RAM to plan for, e.g. 8G (replaces the device's usable RAM).")
@click.option("--bandwidth", type=float, help="Memory bandwidth in GB/s (replaces the device's or the measured one).")
@click.option("--headroom", callback=_size, help="RAM kept free (default: 1 GiB, or 10% when that is less).")
@click.option("--calibrate", type=click.Path(dir_okay=False), help="`edgeq bench` results to fit speed and overhead.")
@click.option("--eval", "eval_results", multiple=True, type=click.Path(dir_okay=False),
              help="`edgeq eval` results with this model's KLD / ΔPPL (repeatable).")
@click.option("--min-tps", type=float, help="Slowest acceptable generation speed (tok/s).")
@click.option("--max-kld", type=float, help="Largest acceptable KL divergence vs full precision.")
@click.option("--min-cosine", type=click.FloatRange(0, 1), default=0.99, show_default=True,
              help="A sentence-embedding model's quality bound: mean cosine with fp32 (--min-tps is then embeddings/s).")
@click.option("--prefer", type=click.Choice(["speed", "quality", "size"]), default="speed", show_default=True,
              help="The objective: the fastest near-lossless quant (speed), the least KLD (quality) or the least RAM "
                   "(size) among those that fit and meet --min-tps/--max-kld.")
@click.option("--largest", is_flag=True, help="Across shipped model configs: the largest model and quant that qualifies.")
@click.option("--family", help="With --largest: one family (llama-3, qwen2.5, gemma-2, mistral).")
@click.option("--rpc", callback=strings, help="Cross-check llama-fit-params with these RPC servers (host:port,…).")
@click.option("--no-fit-params", is_flag=True, help="Skip the llama-fit-params cross-check.")
@revision_option
@token_option
@json_option
def plan(source: str | None, quants: str, ctx: int, cache_type: str, device: str | None, ram: int | None,
         bandwidth: float | None, headroom: int | None, calibrate: str | None, eval_results: tuple[str, ...],
         min_tps: float | None, max_kld: float | None, min_cosine: float, prefer: str, largest: bool, family: str | None, rpc: list[str],
         no_fit_params: bool, revision: str | None, token: str | None, as_json: bool) -> None:
    """Predict size, peak RAM, speed and quality of each quant of SOURCE, and recommend one.

    SOURCE is a GGUF file, a folder of GGUFs, an HF checkpoint folder or repo id (only
    config.json, the tokenizer and the safetensors headers are read); default: the embedded model.
    Exits 1 when nothing meets --ram / --min-tps / --max-kld, naming the closest option.
    """

    if device == "list":
        print_table("devices (edgeq/data/devices.json)", ["name", "description", "usable RAM", "GB/s"],
                    [[d.name, d.description, human_bytes(d.usable_ram_bytes), d.bandwidth_gbps]
                     for d in devices.table().values()])
        return
    if ram == 0:
        raise click.BadParameter("must be more than zero", param_hint="--ram")
    if source and not largest and is_embedding_model(source):
        return plan_embedding_model(source, quants=quants.split(","), ctx=ctx, device=device, ram=ram,
                                    calibrate=calibrate, eval_results=list(eval_results), min_eps=min_tps,
                                    min_cosine=min_cosine, prefer=prefer, as_json=as_json)
    common: dict[str, Any] = dict(quants=[quants], ctx=ctx, cache_type=cache_type, device=device, ram_bytes=ram,
                  bandwidth_gbps=bandwidth, headroom_bytes=headroom, calibrate=calibrate, min_tps=min_tps,
                  max_kld=max_kld, prefer=prefer)
    if largest:
        if source:
            raise click.UsageError("--largest plans the shipped model configs; leave out SOURCE.")
        res = planlib.largest(family=family, **common)
    else:
        if family:
            raise click.UsageError("--family only goes with --largest.")
        res = planlib.plan(source, eval_results=list(eval_results),
                           rpc=rpc or None,
                           fit_params=not no_fit_params, revision=revision, token=token, **common)
    if as_json:
        print_json(res)
    else:
        print_plan(res, largest=largest)
    rec = res.recommendation
    if rec is not None and not rec.ok:
        if not as_json:
            echo(f"Error: {rec.sentence}", err=True)
        click.get_current_context().exit(1)


def print_plan(res: PlanResult, *, largest: bool = False) -> None:
    d = res.device
    title = (f"edgeq plan · {res.source.get('name') or res.source['source']} · {d.name}"
             f" ({human_bytes(res.budget_bytes)} usable after {human_bytes(res.headroom_bytes)} headroom, "
             f"{d.bandwidth_gbps:g} GB/s) · ctx {res.ctx} ({res.cache_type} cache)")
    rows = []
    for r in res.rows:
        q = r.quality
        size = human_bytes(r.file_size_bytes) + (f" (file {human_bytes(r.file_size_measured_bytes)})"
                                                 if r.file_size_measured_bytes else "")
        rows.append(([r.model] if largest else []) + [
            r.quant, size, f"{r.bits_per_weight:.2f}", human_bytes(r.memory.required_bytes),
            "yes" if r.fits else "NO", f"{r.tg_tps:.1f}", f"{r.pp_tps:.0f}" if r.pp_tps else "-",
            f"{q.kld:.4f}" if q.kld is not None else "-",
            (f"{q.delta_ppl:+.3f}" + ("%" if q.delta_ppl_unit == "%" else "")) if q.delta_ppl is not None else "-",
            "eval" if q.measured else "published", f"no: {r.dominated_by}" if r.dominated_by else "yes"])
    print_table(title, (["model"] if largest else []) + [
        "quant", "size", "bits/w", f"RAM @{res.ctx}", "fits", "tg tok/s*", "pp tok/s*",
        "KLD", "ΔPPL", "quality from", "front"], rows)
    for f in res.fit_params:
        echo(f"llama-fit-params {f.quant} on {f.device}: {f.explanation}.")
    for n in res.notes:
        echo(f"• {n}")
    echo("* predictions (memory-bandwidth roofline for tg, compute estimate for pp), not measurements. front: on the "
         "Pareto front of KLD vs tg; 'no: X' = X has no more KLD and is faster beyond noise.")
    rec = res.recommendation
    if rec is not None and rec.ok:
        echo(f"Recommendation: {rec.sentence}")
    elif rec is None:
        note("no recommendation")
