#!/usr/bin/env bash
# `pip install` as a new user meets it (issue 34): a fresh clone of HEAD builds the sdist (which fetches
# and checks the pinned llama.cpp, bindings, model and texts), a new venv in a temporary folder installs
# it (scikit-build-core compiles llama.cpp into the wheel), and from another folder the installed
# `edgeq` runs doctor, convert --q8, inspect, bench -r 1, eval ppl and run, and the library imports
# without touching os.environ.  Each step's time and exit code go to benchmarks/results/pip_install.{log,md}.
#
#   bash benchmarks/pip_install.sh            # about 4 minutes with a warm ccache, 15-25 without
#
# Not in `make test`: the compile alone takes minutes (CI is at its 20-minute budget).  The ccache
# settings make its objects the same as scripts/setup.sh's (same generator, same relative paths), so
# the wheel build reuses a clone's compile.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
OUT="$REPO/benchmarks/results"
WORK=$(mktemp -d /tmp/edgeq-pip.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
LOG="$OUT/pip_install.log"
mkdir -p "$OUT"
: >"$LOG"
ROWS=()
step() {  # step NAME CMD...: run, time, log; stop at the first failure
  local name=$1; shift
  local t0=$SECONDS rc=0
  printf '\n$ %s\n' "$*" >>"$LOG"
  "$@" >>"$LOG" 2>&1 || rc=$?
  ROWS+=("| $name | \`$*\` | $rc | $((SECONDS - t0)) |")
  echo "$name: exit $rc, $((SECONDS - t0)) s" >&2
  if [ "$rc" != 0 ]; then write_md; tail -30 "$LOG" >&2; exit "$rc"; fi
}
write_md() {
  {
    echo "# pip install from the sdist (benchmarks/pip_install.sh)"
    echo
    echo "$(date -u +%Y-%m-%d) · commit $(git -C "$REPO" rev-parse --short HEAD) · $($PY --version) · $(nproc) cores · $(uname -m)"
    echo
    echo "| step | command | exit | seconds |"
    echo "|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "Log: benchmarks/results/pip_install.log (paths under a temporary folder, removed after)."
  } >"$OUT/pip_install.md"
}

export TMPDIR="$WORK/tmp" PIP_DISABLE_PIP_VERSION_CHECK=1
mkdir -p "$TMPDIR"
# pip unpacks the sdist under $TMPDIR; with the base there, ccache hashes paths relative to each compile's
# folder, which the Makefile generator makes the same as scripts/setup.sh's build/ (build-wheel/ is as deep).
export CCACHE_BASEDIR="$WORK" CMAKE_GENERATOR="Unix Makefiles" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)"

step clone git clone -q "$REPO" "$WORK/clone"
step "build venv" "$PY" -m venv "$WORK/buildenv"
step "build tool" "$WORK/buildenv/bin/pip" install -q build
# The sdist fetches what vendor/ lacks with pip (cached in ~/.cache/edgeq/sdist after the first time).
step sdist "$WORK/buildenv/bin/python" -m build --sdist -o "$WORK/dist" "$WORK/clone"
step "sdist size" bash -c "ls -l $WORK/dist/*.tar.gz && tar tzf $WORK/dist/*.tar.gz | grep -c vendor/"
step "new venv" "$PY" -m venv "$WORK/venv"
# torch as scripts/setup.sh installs it (exactly the tested version: the CPU wheel this index serves).
step torch "$WORK/venv/bin/pip" install -q "torch==2.13.0"
step "pip install sdist" "$WORK/venv/bin/pip" install -q "$WORK"/dist/edgeq-*.tar.gz
mkdir -p "$WORK/elsewhere" && cd "$WORK/elsewhere"
E="$WORK/venv/bin/edgeq"
step "where it runs from" "$WORK/venv/bin/python" -c "import edgeq.config as c; assert c.installed(), c.NATIVE_DIR; print(c.build_dir(), c.llama_dir())"
step "import changes nothing" "$WORK/venv/bin/python" -c "import os; b = dict(os.environ); import edgeq; assert dict(os.environ) == b; print([f for f in ('bench', 'evaluate', 'plan', 'report', 'run', 'convert') if callable(getattr(edgeq, f))])"
step doctor "$E" doctor
step "convert --q8" "$E" convert --q8 -o out
step inspect "$E" inspect out/SmolLM2-135M-Instruct-Q8_0.gguf
step "bench -r 1" "$E" bench -r 1 out
step "eval ppl" "$E" eval ppl --max-tokens 4096
step run "$E" run out/SmolLM2-135M-Instruct-Q8_0.gguf "The capital of France is" -n 8
step "library" "$WORK/venv/bin/python" -c "import edgeq, json, dataclasses; r = edgeq.plan('out/SmolLM2-135M-Instruct-Q8_0.gguf', device='pi5-8gb', fit_params=False); print(r.recommendation.sentence)"
write_md
echo "all steps passed: $OUT/pip_install.md" >&2
