"""HF checkpoint → GGUF (F16/BF16/F32) → quantized GGUFs, with a manifest.

``pipeline`` runs the job (the vendored ``convert_hf_to_gguf.py`` writes the float
GGUF and the vendored ``llama-quantize`` makes each quant from it, so both come
from one llama.cpp); ``steps`` decides what to make and whether it fits on disk;
``models`` turns bench's and eval's MODEL arguments into GGUFs through it.
"""
from .models import plan_models
from .pipeline import ConvertResult, OutputFile, convert, fallback_note
from .steps import DISK_MARGIN_BYTES, GGUF_OVERHEAD_BYTES, check_free_disk, estimate_output_bytes, output_name

__all__ = ["DISK_MARGIN_BYTES", "GGUF_OVERHEAD_BYTES", "ConvertResult", "OutputFile", "check_free_disk", "convert",
           "estimate_output_bytes", "fallback_note", "output_name", "plan_models"]
