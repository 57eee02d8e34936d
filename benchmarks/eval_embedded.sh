#!/usr/bin/env bash
# Quality of every variant of the embedded model: HF fp32 (the reference), F16, Q8_0, Q4_K_M,
# a partial Q4_K_M (layers 0-3 kept at F16) and an importance-matrix Q4_K_M.
# Writes benchmarks/results/eval-{ppl,choice}.json; `edgeq report` joins them with embedded.json.
set -euo pipefail
cd "$(dirname "$0")/.."
E=.venv/bin/edgeq
$E convert --quant F16,Q8_0,Q4_K_M -q >/dev/null
$E convert --quant Q4_K_M --keep-layers 0-3=F16 -q >/dev/null
$E convert --quant Q4_K_M --imatrix -q >/dev/null
D=models/SmolLM2-135M-Instruct
M=SmolLM2-135M-Instruct
FILES=("$D/$M-F16.gguf" "$D/$M-Q8_0.gguf" "$D/$M-Q4_K_M.gguf" "$D/$M-Q4_K_M-L0-3_F16.gguf" "$D/$M-Q4_K_M-imat.gguf")
$E eval ppl models/hf/$M "${FILES[@]}" --quants '' --max-tokens "${MAX_TOKENS:-16384}" -o benchmarks/results/eval-ppl.json
$E eval choice models/hf/$M "${FILES[@]}" --quants '' --limit "${LIMIT:-200}" -o benchmarks/results/eval-choice.json
# One report: speed (embedded.json, from benchmarks/embedded.sh) and quality, joined per variant.
R=benchmarks/results
$E report $R/embedded.json $R/eval-ppl.json $R/eval-choice.json -o $R/report >/dev/null
# The docs' tables (hypothesis and quality) from the results files just written.
.venv/bin/python benchmarks/embedded_tables.py >/dev/null
