"""Inference backends: the only modules that import llama_cpp, torch or bitsandbytes."""
