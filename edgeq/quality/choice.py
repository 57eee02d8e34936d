"""Multiple-choice accuracy by log-likelihood of each ending (the PIQA / HellaSwag method).

``acc`` picks the ending with the highest summed log-probability; ``acc_norm``
divides by the ending's length in bytes first, as lm-evaluation-harness does,
so long endings are not penalised for having more tokens.
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..backends import Scorer
from ..errors import UsageError
from ..output import Progress
from .data import ChoiceItem
from .metrics import log_softmax
from .models import open_scorer
from .results import EvalResults, ModelRef, Row, stamp

Encoded = tuple[list[int], list[list[int]], int]  # context tokens, ending tokens, label


def encode(scorer: Scorer, items: list[ChoiceItem]) -> list[Encoded]:
    """Token ids of each context and ending, split as lm-evaluation-harness splits them.

    The pair is tokenized whole and the context's tokens cut off, so a word is
    not broken differently than it would be in running text.
    """
    out = []
    for n, it in enumerate(items, 1):
        ctx = scorer.tokenize(it.context)
        if not ctx:
            raise UsageError(f"item {n}: the context is empty and the model adds no BOS token.",
                             hint="Give every item a non-empty context.")
        ends = []
        for e in it.endings:
            whole = scorer.tokenize(it.context + e)
            cont = whole[len(ctx):] if whole[:len(ctx)] == ctx else scorer.tokenize(e, add_bos=False)
            ends.append(cont or scorer.tokenize(e, add_bos=False))
        out.append((ctx, ends, it.label))
    return out


def _loglik(scorer: Scorer, ctx: list[int], cont: list[int]) -> float:
    toks = ctx + cont
    logits = scorer.logits(toks, reuse_prefix=True)
    lp = log_softmax(logits[len(ctx) - 1:len(toks) - 1])
    return float(lp[np.arange(len(cont)), cont].sum())


def score_model(ref: ModelRef, items: list[ChoiceItem], encoded: list[Encoded], *, threads: int,
                progress: bool, device: str = "cpu") -> tuple[Row, list[int]]:
    t0 = time.perf_counter()
    longest = max(len(c) + max(len(e) for e in ends) for c, ends, _ in encoded)
    scorer = open_scorer(ref, n_ctx=max(64, -(-longest // 64) * 64), threads=threads, device=device)
    picks, hits, hits_norm = [], 0, 0
    try:
        with Progress(f"{ref.variant:>10}", len(items), progress) as bar:
            for i, ((ctx, ends, label), it) in enumerate(zip(encoded, items)):
                ll = [_loglik(scorer, ctx, e) for e in ends]
                norm = [v / max(1, len(text.encode())) for v, text in zip(ll, it.endings)]
                pick = int(np.argmax(ll))
                picks.append(pick)
                hits += pick == label
                hits_norm += int(np.argmax(norm)) == label
                bar.update_to(i + 1)
    finally:
        scorer.close()
    n = len(items)
    acc = hits / n
    row = Row(model=ref, seconds=round(time.perf_counter() - t0, 2), acc=100.0 * acc,
              acc_norm=100.0 * hits_norm / n, acc_stderr=100.0 * math.sqrt(acc * (1 - acc) / max(1, n - 1)), items=n)
    return row, picks


def choice(models: list[ModelRef], items: list[ChoiceItem], source: str, *, reference: ModelRef | None = None,
           threads: int = 1, progress: bool = False, device: str = "cpu") -> EvalResults:
    """Accuracy of each model on ``items``; with ``reference``, how often each picks what it picks."""
    if not models:
        raise UsageError("no model to evaluate.", hint="Pass .gguf files, a folder or an HF checkpoint.")
    owner = next((m for m in [reference, *models] if m and m.backend == "llama.cpp"), reference or models[0])
    tok = open_scorer(owner, n_ctx=64, threads=threads, device=device)
    try:
        encoded = encode(tok, items)
    finally:
        tok.close()
    res = EvalResults(task="choice", reference=reference.label if reference else None,
                      data={"source": source, "items": len(items), "endings": sorted({len(i.endings) for i in items}),
                            "tokenizer": f"{owner.variant} {owner.path}"})
    order = ([reference] if reference else []) + [m for m in models if m != reference]
    ref_picks: list[int] | None = None
    for m in order:
        row, picks = score_model(m, items, encoded, threads=threads, progress=progress, device=device)
        if reference is not None:
            if m == reference:
                ref_picks = picks
            elif ref_picks is not None:
                row.agree_with_reference_pct = 100.0 * float(np.mean(np.array(picks) == np.array(ref_picks)))
        res.rows.append(row)
    return stamp(res, threads, device)
