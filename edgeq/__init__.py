"""edgeq: Hugging Face LLMs → GGUF → quantized, on CPUs and Apple laptops, with one pinned llama.cpp.

    import edgeq
    res = edgeq.convert("meta-llama/Llama-3.2-1B", quants=["Q8_0", "Q4_K_M"])
    info = edgeq.inspect(res.outputs[-1].path)
"""
from ._version import __version__
from .system import use_small_pages

use_small_pages()  # before anything imports numpy, here or in the processes edgeq starts
from .bundle import BundleResult, bundle  # noqa: E402
from .convert import ConvertResult, OutputFile, convert  # noqa: E402
from .doctor import DoctorReport, doctor  # noqa: E402
from .errors import EdgeqError  # noqa: E402
from .generate import GenerateResult, generate  # noqa: E402
from .llamacpp.fitparams import FitResult, fit_params  # noqa: E402
from .manifest import VerifyResult, verify  # noqa: E402
from .ship import ShipResult, ship  # noqa: E402
from .sources.gguf import GGUFInfo  # noqa: E402
from .sources.gguf import read as inspect  # noqa: E402
from .sources.hub import DownloadResult, download  # noqa: E402
from .tune import TuneResult, tune  # noqa: E402
from .upload import UploadResult, upload  # noqa: E402

__all__ = ["__version__", "BundleResult", "ConvertResult", "DoctorReport", "DownloadResult", "EdgeqError", "FitResult", "GGUFInfo",
           "GenerateResult", "OutputFile", "ShipResult", "TuneResult", "UploadResult", "VerifyResult", "bundle", "convert",
           "doctor",
           "download", "fit_params", "generate", "inspect", "ship", "tune", "upload", "verify"]
