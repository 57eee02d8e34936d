"""LoRA adapters through the vendored tree: ``convert_lora_to_gguf.py`` (PEFT folder → adapter GGUF).

(``llama-export-lora``, the tree's merge tool, is built only without ``GGML_BACKEND_DL``; edgeq's build loads
ggml's CPU levels dynamically, so ``convert --merge-lora`` merges in ``conversion.merge`` instead.)"""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ToolFailed
from .build import Toolchain
from .converter import converter_error
from .process import ToolOutput, run_tool
from .would_write import NO_REMOTE_CODE

# The converter run as convert_hf_to_gguf.py is: transformers' remote-code loaders disabled, its folder first on
# the path (it imports convert_hf_to_gguf's ``conversion`` package from beside itself).
_RUN = NO_REMOTE_CODE + """
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def lora_converter(tc: Toolchain) -> Path:
    return tc.llama_dir / "convert_lora_to_gguf.py"


def convert_lora(tc: Toolchain, adapter: Path, base: Path, dst: Path, *, outtype: str = "f16") -> ToolOutput:
    """Write ``dst`` (an adapter GGUF) from the PEFT folder ``adapter``, reading the base's config from ``base``
    (never the Hub: ``--base`` is always given, so the converter asks nothing of the network)."""
    try:
        return run_tool([sys.executable, "-c", _RUN, lora_converter(tc), "--base", base, "--outfile", dst,
                         "--outtype", outtype, adapter], name="convert_lora_to_gguf.py")
    except ToolFailed as e:
        raise converter_error(e, adapter.name, doing="convert the adapter") or e from None
