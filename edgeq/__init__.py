"""edgeq: Hugging Face LLMs → GGUF → quantized, benchmarked, on CPUs and Apple laptops."""
__version__ = "0.1.0"
