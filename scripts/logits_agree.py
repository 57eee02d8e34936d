"""Do two devices compute the same logits for one GGUF?  Exit 0 when they agree, 1 when not, 2 on bad input.

    python scripts/logits_agree.py MODEL.gguf --devices metal,cpu      # CI's macOS job (Apple Silicon)
    python scripts/logits_agree.py MODEL.gguf --devices cpu,cpu        # anywhere: the sanity check (identical)
    python scripts/logits_agree.py MODEL.gguf OTHER.gguf --devices cpu,cpu   # two files (a check that can fail)

Each device scores the same tokens of the default text (Shakespeare) through edgeq's own scorer (a child
process running llama.cpp with that device's layers, as `edgeq eval --device` does); the script compares every
position's distribution: mean KL divergence (A as reference), top-1 agreement and the largest logit difference.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from edgeq import compute
from edgeq.backends.isolated import ChildScorer
from edgeq.errors import EdgeqError
from edgeq.sources.texts import default_text

# Agreement bounds.  On the embedded model (benchmarks/results/eval-ppl.json) two correct implementations of the
# same weights, the F16 GGUF in llama.cpp against the checkpoint in torch fp32, differ by a mean KLD of 4.2e-6 and
# agree on 99.8% of top-1 tokens, while Q8_0's own rounding costs 4.1e-3 and 95.6%.  A device must stay well on the
# implementations' side: under a quarter of Q8_0's KLD, and top-1 agreement above 98%.
MAX_KLD = 1e-3
MIN_TOP1_PCT = 98.0
DEFAULT_TOKENS = 256


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def compare(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean KL(a || b) per position, top-1 agreement (%) and the largest absolute logit difference."""
    la, lb = log_softmax(a), log_softmax(b)
    kld = (np.exp(la) * (la - lb)).sum(axis=-1)
    return {"kld_mean": float(kld.mean()), "kld_max": float(kld.max()),
            "top1_pct": float(100.0 * (a.argmax(-1) == b.argmax(-1)).mean()),
            "max_abs_logit_diff": float(np.abs(a.astype(np.float64) - b).max())}


def logits(path: str, device: str, text: str, n_tokens: int, threads: int) -> tuple[list[int], np.ndarray]:
    scorer = ChildScorer("llama.cpp", path, n_ctx=n_tokens, threads=threads, device=device)
    try:
        tokens = scorer.tokenize(text)[:n_tokens]
        return tokens, np.array(scorer.logits(tokens), dtype=np.float32)  # a copy: the scorer's buffer is reused
    finally:
        scorer.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("model")
    p.add_argument("other", nargs="?", help="Score this file on the second device instead (default: MODEL).")
    p.add_argument("--devices", default="metal,cpu", help="Two of auto, cpu, metal (default: metal,cpu).")
    p.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help="Tokens of the default text to score.")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-kld", type=float, default=MAX_KLD)
    p.add_argument("--min-top1", type=float, default=MIN_TOP1_PCT)
    p.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = p.parse_args(argv)
    try:
        names = [d.strip() for d in args.devices.split(",")]
        if len(names) != 2:
            raise EdgeqError(f"--devices {args.devices!r}: name two devices, e.g. metal,cpu.")
        first, second = (compute.choose(d).device for d in names)
        text = default_text()[0][: args.tokens * 8]  # enough characters for the tokens, not the whole play
        toks_a, a = logits(args.model, first, text, args.tokens, args.threads)
        toks_b, b = logits(args.other or args.model, second, text, args.tokens, args.threads)
    except EdgeqError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code
    if toks_a != toks_b or a.shape != b.shape:
        print("Error: the two runs tokenized the text differently: not the same model.", file=sys.stderr)
        return 1
    res = {"model": args.model, "other": args.other, "devices": [first, second], "tokens": len(toks_a),
           **compare(a, b), "max_kld": args.max_kld, "min_top1_pct": args.min_top1}
    res["agree"] = res["kld_mean"] <= args.max_kld and res["top1_pct"] >= args.min_top1
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{first} vs {second} on {len(toks_a)} tokens: KLD mean {res['kld_mean']:.3g} (max {res['kld_max']:.3g}; "
              f"bound {args.max_kld:g}), top-1 {res['top1_pct']:.2f}% (bound {args.min_top1:g}%), largest logit "
              f"difference {res['max_abs_logit_diff']:.3g}: {'agree' if res['agree'] else 'DISAGREE'}")
    return 0 if res["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
