# The platform decisions of scripts/setup.sh, as functions it sources (and tests/test_setup_portable.py runs with
# PATH shims and a simulated `uname`): which Python, which hashing tool, which prerequisites are missing, which
# CMake flags.  Linux (x86-64, aarch64) and macOS (Apple Silicon, Intel).  Bash 3.2 (macOS's /bin/bash): no
# mapfile, no associative arrays, no ${var,,}.

# The first Python >= 3.10 among $PYTHON, python3, python3.13..3.10 on PATH, then in the folders given (Homebrew's,
# python.org's); its path on stdout, or one line on stderr and status 1.  macOS's own python3 is 3.9.
find_python() {
  local cand dir
  if [ -n "${PYTHON:-}" ] && ! _python_ok "$PYTHON"; then
    echo "setup: PYTHON=$PYTHON is not a Python >= 3.10: point it at one (\`brew install python@3.12\` on macOS)" >&2
    return 1
  fi
  for cand in ${PYTHON:+"$PYTHON"} python3 python3.13 python3.12 python3.11 python3.10; do
    if command -v "$cand" >/dev/null 2>&1 && _python_ok "$cand"; then command -v "$cand"; return 0; fi
  done
  for dir in "$@"; do
    for cand in python3.13 python3.12 python3.11 python3.10 python3; do
      if [ -x "$dir/$cand" ] && _python_ok "$dir/$cand"; then echo "$dir/$cand"; return 0; fi
    done
  done
  echo "setup: needs Python >= 3.10 (found none; macOS's own python3 is 3.9): \`brew install python@3.12\`, python.org's installer, or \`apt-get install python3\`; or set PYTHON=/path/to/python3.x" >&2
  return 1
}

_python_ok() {
  [ "$("$1" -c 'import sys; print(sys.version_info >= (3, 10))' 2>/dev/null)" = True ]
}

# sha256 of stdin, hex first: coreutils' sha256sum (Linux) or perl's shasum (macOS).
sha256() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum
  elif command -v shasum >/dev/null 2>&1; then shasum -a 256
  else echo "setup: needs sha256sum (coreutils) or shasum (perl) to hash files" >&2; return 1
  fi
}

# One line on stderr per prerequisite missing on OS (`uname -s`); status 1 if any is.
check_prereqs() {
  local os=$1 missing=0 version
  if [ "$os" = Darwin ]; then
    if ! xcode-select -p >/dev/null 2>&1; then
      echo "setup: needs Apple's command-line tools (clang, make, git): run \`xcode-select --install\`" >&2; missing=1
    fi
  elif ! { command -v c++ || command -v g++ || command -v clang++; } >/dev/null 2>&1; then
    echo "setup: needs a C/C++ compiler: \`apt-get install build-essential\` (Debian/Ubuntu) or your system's g++" >&2
    missing=1
  fi
  if ! command -v cmake >/dev/null 2>&1; then
    echo "setup: needs CMake >= 3.15: \`brew install cmake\` (macOS), \`apt-get install cmake\` (Debian/Ubuntu) or \`pip install cmake\`" >&2
    missing=1
  else
    version=$(cmake --version 2>/dev/null | sed -n 's/^cmake version \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
    if [ -z "$version" ] || [ "${version%%.*}" -lt 3 ] || { [ "${version%%.*}" -eq 3 ] && [ "${version#*.}" -lt 15 ]; }; then
      echo "setup: needs CMake >= 3.15 (found ${version:-an unreadable version}): \`brew upgrade cmake\`, \`pip install cmake\` or your system's newer package" >&2
      missing=1
    fi
  fi
  return $missing
}

# The CMake flags for OS and ARCH (`uname -s`, `uname -m`), one a line.  Apple Silicon builds Metal in, its
# shaders embedded so the folder can move; an Intel Mac has no Metal here (edgeq.compute.metal_capable agrees);
# x86-64 Linux gets ggml's CPU levels (EDGEQ_CPU_VARIANTS overrides them; aarch64 Linux has its own default).
cmake_flags() {
  case "$1/$2" in
    Darwin/arm64|Darwin/aarch64) printf '%s\n' -DGGML_METAL=ON -DGGML_METAL_EMBED_LIBRARY=ON ;;
    Darwin/*) printf '%s\n' -DGGML_METAL=OFF ;;
    */x86_64|*/amd64) printf '%s\n' "-DEDGEQ_CPU_VARIANTS=${EDGEQ_CPU_VARIANTS:-x64;haswell;zen4}" ;;
    *) if [ -n "${EDGEQ_CPU_VARIANTS:-}" ]; then printf '%s\n' "-DEDGEQ_CPU_VARIANTS=$EDGEQ_CPU_VARIANTS"; fi ;;
  esac
}
