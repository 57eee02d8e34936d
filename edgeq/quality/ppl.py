"""Perplexity and KL-divergence over fixed windows, scored the way llama-perplexity scores them.

The text is tokenized once (by the first GGUF given, else the HF tokenizer) and
every model sees exactly those token ids. Windows of ``ctx`` tokens do not
overlap; the first token of each becomes BOS when the GGUF asks for BOS; only
the second half of each window is scored, so every scored token has at least
ctx/2 tokens of context.
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np

from ..backends import Scorer
from ..backends.isolated import ChildScorer
from ..errors import GGUFError, UsageError
from ..output import Progress
from ..sources.gguf_values import non_finite_logits_error
from ..system import system_info
from .metrics import Divergence, Perplexity, kld_of_logprobs, log_probs, nll_of_logits
from .models import open_scorer
from .results import Check, EvalResults, ModelRef, Row, stamp

CONVERSION_TOLERANCE_PCT = 1.0  # F16 GGUF vs HF fp32: beyond this, conversion is suspect


def tokenize_text(scorer: Scorer, text: str) -> tuple[list[int], bool, int, int]:
    """(tokens, add_bos, bos id, vocabulary size) as the owner's tokenizer makes them."""
    return scorer.tokenize(text), bool(scorer.adds_bos), int(scorer.bos_id), int(scorer.n_vocab)


def windows(tokens: list[int], ctx: int, max_tokens: int | None, add_bos: bool, bos: int) -> list[list[int]]:
    """Non-overlapping windows of ``ctx`` tokens; the first of each is BOS when the model wants one."""
    if ctx < 16 or ctx % 2:
        raise UsageError(f"--ctx {ctx} is too small or odd.", hint="Use an even number ≥ 16, e.g. 512.")
    n = len(tokens) // ctx
    if max_tokens is not None:
        n = min(n, max_tokens // ctx)
    if n == 0:
        limit = f" and --max-tokens {max_tokens}" if max_tokens is not None else ""
        raise UsageError(f"the text has {len(tokens)} tokens{limit}; one window needs {ctx} (--ctx).",
                         hint="Use a longer text" + (", a larger --max-tokens" if limit else "") + " or a smaller --ctx.")
    out = [list(tokens[i * ctx:(i + 1) * ctx]) for i in range(n)]
    if add_bos:
        for w in out:
            w[0] = bos
    return out


def _scored(logits: np.ndarray, window: list[int], n_vocab: int, *,
            buffers: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray | None, np.ndarray]:
    """(log-probs of the scored rows when KLD needs them, NLL of each scored token).

    ``logits`` starts at the window's middle (``first``): the first half is context only.  ``buffers``: two
    float32 arrays of the scored rows' shape for the log-probs (the first is returned), or None for NLL only.
    """
    first = len(window) // 2
    x = logits[:len(window) - 1 - first, :n_vocab]
    targets = np.asarray(window[first + 1:])
    if buffers is None:
        return None, nll_of_logits(x, targets)
    lp = log_probs(x, *buffers)
    return lp, -lp[np.arange(len(targets)), targets].astype(np.float64)


def score_model(ref: ModelRef, wins: list[list[int]], n_vocab: int, *, threads: int, progress: bool,
                store: np.ndarray | None = None, reference: np.ndarray | None = None,
                scorer: Scorer | None = None, device: str = "cpu", keep_open: bool = False) -> Row:
    """Score one model on every window; fill ``store`` with its log-probs, or compare with ``reference``'s.

    ``scorer``: the model already open (the one that tokenized the text); it is closed here, unless ``keep_open``
    and the scoring succeeded.
    """
    t0 = time.perf_counter()
    ctx = len(wins[0])
    scorer = scorer or open_scorer(ref, n_ctx=ctx, threads=threads, device=device)
    if scorer.n_vocab < n_vocab:
        scorer.close()
        raise UsageError(f"{ref.path} has a vocabulary of {scorer.n_vocab} tokens, the text was tokenized for {n_vocab}.",
                         hint="Compare variants of one model only.")
    nll, kld, same, done = [], [], [], False
    # Every window's scored rows have one shape: their log-probs go to the same two buffers, not fresh memory.
    rows = (ctx - 1 - ctx // 2, n_vocab)
    buffers = (np.empty(rows, np.float32), np.empty(rows, np.float32)) if store is not None or reference is not None \
        else None
    try:
        with Progress(f"{ref.variant:>10}", len(wins), progress) as bar:
            for i, w in enumerate(wins):
                lp, n = _scored(scorer.logits(w, first=ctx // 2), w, n_vocab, buffers=buffers)
                nll.append(n)
                if store is not None:
                    store[i] = lp
                if reference is not None and lp is not None and buffers is not None:
                    same.append(reference[i].argmax(-1) == lp.argmax(-1))
                    kld.append(kld_of_logprobs(reference[i], lp, buffers[1]))  # overwrites both buffers
                bar.update_to(i + 1)
        done = True
    finally:
        if not (keep_open and done):
            scorer.close()
    p = Perplexity.of(np.concatenate(nll))
    if not math.isfinite(p.ppl):
        # NaN/Inf logits: a broken file, never a score; writing "nan ± nan" with exit 0 hid it.
        if ref.backend != "llama.cpp":
            raise GGUFError(f"{ref.label} gives non-finite logits (perplexity {p.ppl}), so no quality figure exists "
                            "for it.", hint="Score the checkpoint in fp32 (--hf fp32).")
        raise non_finite_logits_error(ref.path, "no quality figure exists for it")
    row = Row(model=ref, seconds=round(time.perf_counter() - t0, 2), ppl=p.ppl, ppl_stderr=p.ppl_stderr,
              tokens_scored=p.tokens)
    if kld:
        d = Divergence.of(np.concatenate(kld), np.concatenate(same))
        row.kld_mean, row.kld_stderr, row.kld_median = d.kld_mean, d.kld_stderr, d.kld_median
        row.kld_p99, row.kld_max, row.top1_pct = d.kld_p99, d.kld_max, d.top1_pct
    return row


def perplexity(models: list[ModelRef], text: str, source: str, *, reference: ModelRef | None = None,
               ctx: int = 512, max_tokens: int | None = None, threads: int = 1,
               progress: bool = False, device: str = "cpu") -> EvalResults:
    """Perplexity of each model on ``text``; with ``reference``, KL-divergence and top-1 agreement too.

    ``device``: where the GGUF files are scored, a name ``compute.choose`` resolved (cpu | metal)."""
    if not models:
        raise UsageError("no model to evaluate.", hint="Pass .gguf files, a folder or an HF checkpoint.")
    owner = next((m for m in [reference, *models] if m and m.backend == "llama.cpp"), reference or models[0])
    opened = open_scorer(owner, n_ctx=ctx, threads=threads, device=device)
    try:
        tokens, add_bos, bos, n_vocab = tokenize_text(opened, text)
        wins = windows(tokens, ctx, max_tokens, add_bos, bos)
    except BaseException:
        opened.close()
        raise
    # The child that tokenized scores first: the owner itself, or the first model loaded in its place.
    first_scored = reference or models[0]
    kept = opened if first_scored.key == owner.key else _reuse(opened, owner, first_scored)
    used = len(wins) * ctx
    data = {"source": source, "ctx": ctx, "windows": len(wins), "tokens_total": len(tokens), "tokens_used": used,
            "tokens_unused": len(tokens) - used, "tokens_scored_per_window": ctx - 1 - ctx // 2,
            "add_bos": add_bos, "tokenizer": f"{owner.variant} {Path(owner.path).name}", "max_tokens": max_tokens}
    res = EvalResults(task="ppl", data=data, reference=reference.label if reference else None)
    others = [m for m in models if not reference or m.key != reference.key]

    def score_all(jobs: list[tuple[ModelRef, dict[str, np.ndarray]]]) -> list[Row]:
        """Each (model, ``score_model`` arrays) in turn, each GGUF in the child that scored the one before it."""
        out, live, prev = [], kept, None
        try:
            for m, arrays in jobs:
                if prev is not None:
                    live = _reuse(live, prev, m)
                live = live or open_scorer(m, n_ctx=ctx, threads=threads, device=device)
                out.append(score_model(m, wins, n_vocab, threads=threads, progress=progress, scorer=live,
                                       device=device, keep_open=True, **arrays))
                prev = m
        finally:
            if live is not None:
                live.close()
        return out

    if reference is None:
        res.rows = score_all([(m, {}) for m in models])
    else:
        # The reference's log-probs for every scored position: in memory where they take at most a quarter of the
        # free RAM, else on disk (they outgrow RAM on long texts).  On disk they are also written back: 2.5 GB for
        # 16 windows of a 152k vocabulary, a third of the F16 reference's 67 s in tune's verification here.
        shape = (len(wins), ctx - 1 - ctx // 2, n_vocab)
        with tempfile.TemporaryDirectory(prefix="edgeq-kld-") as tmp:
            if 4 * math.prod(shape) * 4 <= system_info().ram_available_bytes:
                store = np.empty(shape, dtype=np.float32)
            else:
                store = np.lib.format.open_memmap(Path(tmp) / "reference.npy", mode="w+", dtype=np.float32, shape=shape)
            ref_row, *rows = score_all([(reference, {"store": store}), *[(m, {"reference": store}) for m in others]])
            del store
        for r in rows:
            r.delta_ppl_pct = 100.0 * (r.ppl / ref_row.ppl - 1.0)  # type: ignore[operator]
        res.rows = [ref_row, *rows]
    res.checks = conversion_checks(res.rows)
    return stamp(res, threads, device)


def conversion_checks(rows: list[Row]) -> list[Check]:
    """F16/BF16/F32 GGUF vs the HF fp32 model it came from: perplexities must agree within 1%."""
    checks = []
    hf = {r.model.name: r for r in rows if r.model.backend == "transformers" and r.model.variant == "fp32"}
    for r in rows:
        base = hf.get(r.model.name)
        if base is None or r.model.variant not in ("F16", "BF16", "F32") or not base.ppl or not r.ppl:
            continue
        diff = 100.0 * (r.ppl / base.ppl - 1.0)
        ok = abs(diff) <= CONVERSION_TOLERANCE_PCT
        checks.append(Check(name=f"conversion {r.model.name} {r.model.variant}", ok=ok,
                            detail=f"{r.model.variant} GGUF ppl {r.ppl:.4f} vs HF fp32 {base.ppl:.4f}: "
                                   f"{diff:+.2f}% ({'within' if ok else 'OUTSIDE'} ±{CONVERSION_TOLERANCE_PCT:g}%)"))
    return checks


def _reuse(live: Scorer | None, prev: ModelRef, ref: ModelRef) -> Scorer | None:
    """``live``, the child that scored ``prev``, loading ``ref`` in its place where both are GGUF files without an
    adapter (the same options): a child's start-up (Python, edgeq, libllama: about 2 s) is paid once an eval, not
    once a file.  Otherwise ``live`` is closed and None returned."""
    if live is None:
        return None
    if isinstance(live, ChildScorer) and prev.backend == ref.backend == "llama.cpp" and not prev.lora and not ref.lora:
        live.open(ref.path)
        return live
    live.close()
    return None
