"""The arithmetic of quality: log-softmax, perplexity with its standard error, KL-divergence.

Plain numpy on arrays, so it is tested without any model. Formulas follow
llama.cpp's ``tools/perplexity``: the error of ln(PPL) is the standard error of
the mean NLL, and PPL's is PPL times that.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities, computed in float64 so tiny KL-divergences are not rounding noise."""
    x = logits.astype(np.float64, copy=False)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def log_probs(logits: np.ndarray, out: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
    """Row-wise log-probabilities as float32, each row's normaliser summed in float64; written into ``out`` and
    ``scratch`` (float32, the logits' shape) when given.

    What perplexity and KL-divergence use on each window: ``log_softmax`` in float64 took 0.35-0.7 s a window of
    a 152k vocabulary (four float64 temporaries of 310 MB), a quarter of the window's own time on 2 cores; this
    takes two float32 buffers, which a caller scoring many windows allocates once (fresh memory is what costs:
    on the VMs here its page faults took 2 s of system time a gigabyte).  The float32 rounding (1e-7 of a
    log-probability) moves a mean KLD by far less than its own standard error (``tests/test_eval.py`` bounds it
    against float64).
    """
    x = np.asarray(logits, dtype=np.float32)
    lp = np.subtract(x, x.max(axis=-1, keepdims=True), out=out)
    z = np.exp(lp, out=scratch).sum(axis=-1, dtype=np.float64)
    lp -= np.log(z).astype(np.float32)[:, None]
    return lp


def kld_of_logprobs(ref_logprobs: np.ndarray, logprobs: np.ndarray,
                    scratch: np.ndarray | None = None) -> np.ndarray:
    """KL(reference ‖ model) per row, in nats, from float32 log-probs (``log_probs``): the products in float32,
    summed in float64.  ``logprobs`` is overwritten, and ``scratch`` (its shape) when given."""
    d = np.subtract(ref_logprobs, logprobs, out=logprobs)
    d *= np.exp(ref_logprobs, out=scratch)
    return np.maximum(d.sum(axis=-1, dtype=np.float64), 0.0)


def nll_of_logits(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of ``targets[i]`` under row i of raw logits, without materialising log-softmax.

    As llama-perplexity computes it: exponentials in float32 after subtracting the
    row's maximum, summed in float64.  One pass over the vocabulary instead of the
    several a float64 log-softmax takes, which is most of a window's cost on a
    152k vocabulary.
    """
    x = np.asarray(logits, dtype=np.float32)
    rows = np.arange(len(targets))
    top = x.max(axis=-1)
    shifted = x - top[:, None]
    np.exp(shifted, out=shifted)  # in place: one temporary the size of the logits, not two
    total = shifted.sum(axis=-1, dtype=np.float64)
    return np.log(total) + top.astype(np.float64) - x[rows, targets].astype(np.float64)


def token_nll(logprobs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of ``targets[i]`` under row i."""
    return -logprobs[np.arange(len(targets)), targets]


def mean_stderr(x: np.ndarray) -> tuple[float, float]:
    n = len(x)
    if n == 0:
        return math.nan, math.nan
    m = float(np.mean(x))
    return m, float(np.std(x, ddof=1) / math.sqrt(n)) if n > 1 else 0.0


@dataclass
class Perplexity:
    ppl: float
    ppl_stderr: float
    nll_mean: float
    tokens: int

    @classmethod
    def of(cls, nll: np.ndarray) -> Perplexity:
        m, se = mean_stderr(nll)
        ppl = math.exp(m)
        return cls(ppl=ppl, ppl_stderr=ppl * se, nll_mean=m, tokens=len(nll))


@dataclass
class Divergence:
    kld_mean: float
    kld_stderr: float
    kld_median: float
    kld_p99: float
    kld_max: float
    top1_pct: float  # % of positions where the model's most likely token is the reference's

    @classmethod
    def of(cls, kld: np.ndarray, same_top: np.ndarray) -> Divergence:
        m, se = mean_stderr(kld)
        return cls(kld_mean=m, kld_stderr=se, kld_median=float(np.median(kld)),
                   kld_p99=float(np.percentile(kld, 99)), kld_max=float(kld.max()),
                   top1_pct=100.0 * float(np.mean(same_top)))
