"""`edgeq plan` for a sentence-embedding model: size, RAM at its context, embeddings/s and a pick by the rule.

The same decision rule as a generator's (``planning.objective``), with the quality figure an embedding has: the
cosine distance to full precision (1 − mean cosine, from `edgeq eval embeddings` results), bounded by
``DEFAULT_MIN_COSINE``.  Sizes come from the generator's predictor (``planning.size``: llama-quantize's rules,
K-quant fallback included); RAM is llama.cpp's for an encoder, which keeps no KV cache: the weights, one batch of
``ctx`` tokens' activations and attention scores, and the runtime.  Speed is measured (``calibrate``: bench
results of this model) or predicted from the device's compute, as prompt processing is: an encoder's batch is
matrix products over every token at once, so FLOPs, not bandwidth, bound it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..planning import devices
from ..planning.memory import DEFAULT_OVERHEAD_BYTES, VOCAB_FACTOR
from ..planning.objective import DEFAULT_PREFER, PREFERENCES, band, choose, dominated_by, within_bound
from ..planning.size import predict_size
from ..planning.source import load
from ..planning.spec import ModelSpec

SCHEMA = "edgeq-plan-embeddings/1"
DEFAULT_QUANTS = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M")
DEFAULT_MIN_COSINE = 0.99  # mean cosine with fp32: the bar for Q8_0, and retrieval barely moves above it
DEFAULT_TEXT_TOKENS = 128  # a passage: what a predicted embeddings/s is for


@dataclass
class EmbeddingOption:
    quant: str
    file_size_bytes: int
    bits_per_weight: float
    fallback_share: float  # of the weights in a legacy type where a K-type was asked for (hidden not ÷ 256)
    total_bytes: int  # RAM at ctx
    fits: bool
    eps: float  # embeddings/s at batch 1 (measured or predicted)
    eps_low: float | None = None  # measured min–max; None: predicted
    eps_high: float | None = None
    eps_batch: float | None = None  # at the largest measured batch
    cos_mean: float | None = None  # measured against fp32
    topk_agreement: float | None = None
    speed_from: str = "predicted"
    quality_from: str | None = None
    dominated_by: str | None = None

    # What ``planning.objective`` reads (``settle`` fills them): the cosine distance plays KLD's part,
    # embeddings/s at batch 1 generation speed's.
    kld: float | None = None
    tg_tps: float = 0.0

    def settle(self) -> EmbeddingOption:
        self.kld = None if self.cos_mean is None else max(0.0, 1 - self.cos_mean)
        self.tg_tps = self.eps
        return self

    @property
    def tg_range(self) -> tuple[float, float]:
        return band(self.eps, self.eps_low, self.eps_high)

    @property
    def pp(self) -> float | None:
        return self.eps_batch

    @property
    def pp_range(self) -> tuple[float, float] | None:
        return band(self.eps_batch) if self.eps_batch else None


@dataclass
class EmbeddingPlan:
    schema: str
    model: dict[str, Any]
    device: dict[str, Any]
    ctx: int
    budget_bytes: int
    options: list[EmbeddingOption] = field(default_factory=list)
    pick: str | None = None
    sentence: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ram_bytes(spec: ModelSpec, weights: int, ctx: int) -> int:
    """Peak RSS of llama.cpp embedding one batch of ``ctx`` tokens: weights, activations and the attention scores
    of every head (an encoder attends over the whole batch at once), runtime and vocabulary."""
    act = ctx * (6 * spec.n_embd + 3 * spec.n_ff + 3 * spec.n_embd)
    scores = 2 * spec.n_head * ctx * ctx  # scores and their softmax
    return weights + 4 * (act + scores) + DEFAULT_OVERHEAD_BYTES + int(VOCAB_FACTOR * spec.metadata_bytes)


def flops_per_token(spec: ModelSpec, text_tokens: int) -> float:
    """Matrix FLOPs per token: 2 per weight of the layers (the token embedding is a lookup), plus attention."""
    weights = sum(t.n_elements for t in spec.tensors if t.name.startswith("blk."))
    return 2.0 * weights + 4.0 * spec.n_layer * text_tokens * spec.n_embd


def plan_embeddings(src: str, *, quants: list[str] | tuple[str, ...] = DEFAULT_QUANTS, ctx: int | None = None,
                    device: str | None = None, ram: int | None = None, calibrate: str | Path | None = None,
                    eval_results: list[str | Path] | None = None, min_eps: float | None = None,
                    min_cosine: float = DEFAULT_MIN_COSINE, prefer: str = DEFAULT_PREFER,
                    text_tokens: int = DEFAULT_TEXT_TOKENS) -> EmbeddingPlan:
    """Plan each type of ``src`` for ``device`` (default: this machine) and pick one by ``prefer``."""
    if prefer not in PREFERENCES:
        raise UsageError(f"unknown --prefer {prefer!r}.", hint=f"Use one of: {', '.join(PREFERENCES)}.")
    spec = load(src)
    dev = devices.named(device) if device else devices.this_machine(bandwidth_gbps=1.0)
    if ram is not None:
        dev = devices.override(dev, ram_bytes=ram)
    # An encoder embeds at most the context it was trained on (its position table): a larger --ctx is cut to it.
    ctx = min(ctx or spec.ctx_train or 512, spec.ctx_train or ctx or 512)
    budget = dev.usable_ram_bytes - devices.headroom_bytes(dev)
    measured = _bench_rows(calibrate) if calibrate and not device else {}
    quality = _eval_rows(eval_results or [])
    gflops = (dev.gflops or 0) * (dev.pp_efficiency or 0.3)
    predicted = gflops * 1e9 / (flops_per_token(spec, text_tokens) * text_tokens) if gflops else 0.0
    options = []
    for q in quants:
        size = predict_size(spec, q)
        total = ram_bytes(spec, size.file_size_bytes, ctx)
        o = EmbeddingOption(size.quant, size.file_size_bytes, size.bits_per_weight, size.fallback_share, total,
                            total <= budget, round(predicted, 1))
        if (m := measured.get(size.quant)) is not None:
            o.eps, o.eps_low, o.eps_high, o.eps_batch, o.speed_from = m
        if (qq := quality.get(size.quant)) is not None:
            o.cos_mean, o.topk_agreement, o.quality_from = qq
        options.append(o.settle())
    for o in options:
        o.dominated_by = dominated_by(options).get(o.quant)
    res = EmbeddingPlan(SCHEMA, {"source": src, "name": spec.name, "architecture": spec.arch,
                                 "parameters": sum(t.n_elements for t in spec.tensors), "n_embd": spec.n_embd,
                                 "ctx_train": spec.ctx_train},
                        {"name": dev.name, "description": dev.description, "usable_ram_bytes": dev.usable_ram_bytes,
                         "gflops": dev.gflops}, ctx, budget, options)
    res.pick, res.sentence = decide(options, min_eps=min_eps, min_cosine=min_cosine, prefer=prefer)
    res.notes = _notes(spec, options, measured, quality, text_tokens)
    return res


def decide(options: list[EmbeddingOption], *, min_eps: float | None, min_cosine: float,
           prefer: str) -> tuple[str | None, str]:
    """(the pick, one sentence): by ``prefer`` among the options that fit and meet ``min_eps``, keeping to
    ``min_cosine`` for the speed and size objectives (all of them when none has measured quality within it)."""
    ok = [o for o in options if o.fits and (min_eps is None or o.eps >= min_eps)]
    if not ok:
        return None, "nothing fits and meets --min-eps: pass a bigger target or a smaller --ctx."
    bound = 1 - min_cosine
    kept = within_bound(ok, bound) if prefer != "quality" else ok
    ch = choose(kept or ok, prefer if kept else "quality")
    best = ch.best
    assert isinstance(best, EmbeddingOption)
    q = f"mean cosine {best.cos_mean:.4f}" if best.cos_mean is not None else "quality not measured"
    lead = {"speed": f"the fastest ({best.eps:.1f} embeddings/s, {best.speed_from}) with mean cosine ≥ {min_cosine:g}",
            "size": f"the smallest with mean cosine ≥ {min_cosine:g}", "quality": "the closest to fp32"}[prefer]
    if not kept and prefer != "quality":
        lead = (f"no type has a measured mean cosine ≥ {min_cosine:g} (run `edgeq eval embeddings` and pass "
                "--eval-results), so the closest to fp32 by what is known")
    ties = f"; {', '.join(ch.ties)} within noise on {ch.tied_on}" if ch.ties else ""
    return best.quant, (f"{best.quant}: {lead} ({q}) that fits ({best.total_bytes / 2**20:.1f} MiB at this context)"
                        f"{ties}.")


def _bench_rows(path: str | Path) -> dict[str, tuple[float, float, float, float | None, str]]:
    d = json.loads(Path(path).read_text(encoding="utf-8"))
    if not str(d.get("schema", "")).startswith("edgeq-bench-embeddings/"):
        raise UsageError(f"{path} is not `edgeq bench` results of an embedding model.",
                         hint="Pass the JSON `edgeq bench MODEL -o FILE` wrote for this model.")
    out: dict[str, tuple[float, float, float, float | None, str]] = {}
    for r in d["runs"]:
        if r["backend"] != "llama.cpp" or r["status"] != "ok" or r["batch"] != 1:
            continue
        big = max((x for x in d["runs"] if x["variant"] == r["variant"] and x["backend"] == "llama.cpp"
                   and x["status"] == "ok"), key=lambda x: x["batch"])
        s = r["texts_per_s"]
        out[r["variant"]] = (s["median"], s["min"], s["max"], big["texts_per_s"]["median"] if big["batch"] > 1 else None,
                             "measured")
    return out


def _eval_rows(paths: list[str | Path]) -> dict[str, tuple[float, float, str]]:
    out: dict[str, tuple[float, float, str]] = {}
    for p in paths:
        d = json.loads(Path(p).read_text(encoding="utf-8"))
        if not str(d.get("schema", "")).startswith("edgeq-eval-embeddings/"):
            raise UsageError(f"{p} is not `edgeq eval embeddings` results.", hint="Pass the JSON it wrote (-o).")
        for r in d["rows"]:
            if r["backend"] == "llama.cpp":
                out[r["variant"]] = (r["cos_mean"], r["topk_agreement"], f"measured ({Path(p).name})")
    return out


def _notes(spec: ModelSpec, options: list[EmbeddingOption], measured: dict[str, Any], quality: dict[str, Any],
           text_tokens: int) -> list[str]:
    notes = []
    fb = [o for o in options if o.fallback_share >= 0.01]
    if fb:
        notes.append(f"{', '.join(o.quant for o in fb)}: llama.cpp falls back to legacy types where a row's length "
                     f"(hidden size {spec.n_embd}) is not a multiple of 256 (up to {max(o.fallback_share for o in fb):.0%} "
                     "of the weights), so these files are bigger than their names suggest.")
    if not measured:
        notes.append(f"embeddings/s are predicted from the device's compute for {text_tokens}-token texts (the same "
                     "for every type); pass --calibrate with `edgeq bench` results of this model to use measured ones.")
    if not quality:
        notes.append("quality is not measured: pass --eval-results with `edgeq eval embeddings` results.")
    return notes


__all__ = ["DEFAULT_MIN_COSINE", "DEFAULT_QUANTS", "SCHEMA", "EmbeddingOption", "EmbeddingPlan", "decide",
           "flops_per_token", "plan_embeddings", "ram_bytes"]
