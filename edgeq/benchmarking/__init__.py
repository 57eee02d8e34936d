"""`edgeq bench`: quantized GGUF on llama.cpp against full precision, measured on this machine."""
from .matrix import bench, failure
from .results import BenchResults, RunResult

__all__ = ["BenchResults", "RunResult", "bench", "failure"]
