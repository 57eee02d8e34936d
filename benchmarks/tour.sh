#!/usr/bin/env bash
# The README's tour: the main commands on the embedded model (no source given), run in a fresh folder, each
# command's output kept in benchmarks/results/tour/ (the README quotes these files, nothing else).
#   bash benchmarks/tour.sh            # about 3 minutes on 2 cores
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
E="$ROOT/.venv/bin/edgeq"
OUT="$ROOT/benchmarks/results/tour"
WORK=$(mktemp -d)
export COLUMNS=100 EDGEQ_NO_PROGRESS=1
mkdir -p "$OUT"
cd "$WORK"
M=models/SmolLM2-135M-Instruct
"$E" convert --q8 --q4 >"$OUT/convert.txt" 2>&1
"$E" plan --quants F16,Q8_0,Q4_K_M >"$OUT/plan.txt" 2>&1
"$E" inspect $M/SmolLM2-135M-Instruct-Q4_K_M.gguf --json >"$OUT/inspect.json"
"$E" verify $M >"$OUT/verify.txt" 2>&1
"$E" run $M/SmolLM2-135M-Instruct-Q8_0.gguf "The capital of France is" -n 24 >"$OUT/run.txt" 2>&1
"$E" eval ppl --max-tokens 2048 >"$OUT/eval-ppl.txt" 2>&1
cp edgeq-eval-ppl.json "$OUT/eval-ppl.json"
"$E" doctor --json >"$OUT/doctor.json" || true  # the machine it ran on
echo "tour: $OUT (work folder $WORK)"
