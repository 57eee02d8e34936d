#!/usr/bin/env bash
# The benchmark behind docs/benchmarks/hypothesis.md's table: the embedded SmolLM2-135M as F32, F16,
# Q8_0 and Q4_K_M GGUF (llama.cpp) against transformers fp32 / bf16 and the
# seeds' bitsandbytes int8 / NF4, all measured interleaved in one run on this
# machine (this VM's speed drifts ±20% within minutes: never compare across runs).
# Prints the table and verdict; writes JSON, CSV and a Markdown report with charts.
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results
mkdir -p "$out"
.venv/bin/edgeq bench -p "${P:-128}" -n "${N:-64}" -r "${R:-3}" --batch "${BATCH:-1,16}" --check-llama-bench \
  -o "$out/embedded.json" --csv "$out/embedded.csv"
.venv/bin/edgeq report "$out/embedded.json" -o "$out/report"
# The docs' tables (hypothesis and quality) from the results files just written.
.venv/bin/python benchmarks/embedded_tables.py >/dev/null
