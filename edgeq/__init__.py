"""edgeq: Hugging Face LLMs → GGUF → quantized, on CPUs and Apple laptops, with one pinned llama.cpp.

Every command is a function of the same name, taking plain arguments and returning a dataclass that
``dataclasses.asdict`` turns into the command's ``--json`` document::

    import edgeq
    res = edgeq.convert("meta-llama/Llama-3.2-1B", quants=["Q8_0", "Q4_K_M"])
    speed = edgeq.bench([res.outputs[-1].path], reps=1)
    quality = edgeq.evaluate([o.path for o in res.outputs])        # `edgeq eval ppl`
    plan = edgeq.plan(res.outputs[-1].path, device="pi5-8gb")
    edgeq.report(["edgeq-bench.json"], "report")

The packages behind them are named for the job (``edgeq.conversion``, ``edgeq.benchmarking``,
``edgeq.planning``, ...), so no function here hides a module.  Importing edgeq reads nothing and writes
nothing: no environment variable, no file, no child process.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .benchmarking import BenchResults, bench
from .bundling import BundleResult, bundle
from .conversion import ConvertResult, OutputFile, convert
from .diagnosis import DoctorReport, doctor
from .errors import EdgeqError
from .generation import GenerateResult, generate, run
from .llamacpp.fitparams import FitResult, fit_params
from .manifest import VerifyResult, verify
from .planning import PlanResult, plan
from .reporting import ReportResult, report
from .shipping import ShipResult, ship
from .sources import Source, resolve
from .sources.gguf import GGUFInfo
from .sources.gguf import read as inspect
from .sources.hub import DownloadResult, download
from .tuning import TuneResult, tune
from .uploading import UploadResult, upload

if TYPE_CHECKING:
    from .quality import EvalResults, evaluate



def __getattr__(name: str) -> Any:
    # ``edgeq.quality`` loads numpy (a tenth of a second): fetched when first used, so `edgeq --help` never pays.
    if name in ("evaluate", "EvalResults"):
        from .quality import EvalResults, evaluate

        return {"evaluate": evaluate, "EvalResults": EvalResults}[name]
    raise AttributeError(f"module 'edgeq' has no attribute {name!r}")

__all__ = ["__version__", "BenchResults", "BundleResult", "ConvertResult", "DoctorReport", "DownloadResult",
           "EdgeqError", "EvalResults", "FitResult", "GGUFInfo", "GenerateResult", "OutputFile", "PlanResult",
           "ReportResult", "ShipResult", "Source", "TuneResult", "UploadResult", "VerifyResult", "bench", "bundle",
           "convert", "doctor", "download", "evaluate", "fit_params", "generate", "inspect", "plan", "report",
           "resolve", "run", "ship", "tune", "upload", "verify"]
