"""The full-precision baseline a user would otherwise run: transformers on the CPU (or CUDA),
in fp32 / bf16, and with bitsandbytes 8-bit and NF4 (the seed studies' method)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

VARIANTS = ("fp32", "bf16", "bnb-int8", "bnb-nf4")


def unavailable_reason(variant: str, device: str) -> str | None:
    """Why a variant cannot run here, or None. Checked before spawning a worker."""
    import importlib.util

    if variant.startswith("bnb") and importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed (pip install bitsandbytes==0.50.2)"
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU is visible to torch"
    if device == "metal":
        return "transformers is benchmarked on the CPU only on Apple (MPS is not a like-for-like baseline)"
    return None


def load_kwargs(variant: str, device: str = "cpu") -> dict[str, Any]:
    """``from_pretrained`` arguments for a variant: its dtype, and bitsandbytes' config for the bnb ones."""
    import torch

    if variant not in VARIANTS:
        raise ValueError(f"unknown transformers variant {variant!r} (one of {', '.join(VARIANTS)})")
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if variant == "bf16" else torch.float32}
    if variant.startswith("bnb"):
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_8bit=True) if variant == "bnb-int8" else
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32))
        kwargs["device_map"] = device
    return kwargs


class HFRunner:
    """Greedy prompt processing + generation with a KV cache, B sequences at a time."""

    def __init__(self, checkpoint: str | Path, variant: str, *, threads: int, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        self.torch, self.device = torch, device
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.model = AutoModelForCausalLM.from_pretrained(checkpoint, **load_kwargs(variant, device))
        if not variant.startswith("bnb"):
            self.model.to(device)  # type: ignore[arg-type]  # transformers types .to() for its wrapper only
        self.model.eval()
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.weight_bytes = self.model.get_memory_footprint()
        self.bytes_per_token = self.weight_bytes - _unread_embedding_bytes(self.model)

    def tokenize(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        bos = self.tokenizer.bos_token_id
        self.adds_bos = bool(ids) and bos is not None and ids[0] == bos
        return ids

    def run(self, prompts: list[list[int]], n_gen: int) -> tuple[float, float, list[list[int]]]:
        """(prompt seconds, generation seconds for n_gen decode steps, tokens per sequence)."""
        torch = self.torch
        ids = torch.tensor(prompts, device=self.device)
        with torch.inference_mode():
            t0 = time.perf_counter()
            out = self.model(input_ids=ids, use_cache=True)
            nxt = out.logits[:, -1, :].argmax(-1, keepdim=True)
            self._sync()
            t1 = time.perf_counter()
            past, tokens = out.past_key_values, [nxt]
            for _ in range(n_gen):
                out = self.model(input_ids=nxt, past_key_values=past, use_cache=True)
                past, nxt = out.past_key_values, out.logits[:, -1, :].argmax(-1, keepdim=True)
                tokens.append(nxt)
            self._sync()
            t2 = time.perf_counter()
        gen = torch.cat(tokens, dim=1).tolist()
        return t1 - t0, t2 - t1, gen

    def decode(self, tokens: list[int]) -> str:
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True))

    def peak_gpu_bytes(self) -> int | None:
        return int(self.torch.cuda.max_memory_allocated()) if self.device == "cuda" else None

    def _sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()


class HFScorer:
    """Logits of a transformers model for given token ids: in fp32, the full-precision reference; in bf16 or
    bitsandbytes, the seed studies' quantized baselines."""

    kind = "hf"

    def __init__(self, checkpoint: str | Path, *, threads: int, variant: str = "fp32") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # edgeq draws its own progress, per window
        torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.model = AutoModelForCausalLM.from_pretrained(checkpoint, **load_kwargs(variant)).eval()
        self.n_vocab = int(self.model.get_output_embeddings().weight.shape[0])
        self.n_ctx = int(getattr(self.model.config, "max_position_embeddings", 0) or 1 << 20)
        bos = self.tokenizer.bos_token_id
        probe = list(self.tokenizer("a", add_special_tokens=True)["input_ids"])
        self.bos_id = int(bos) if bos is not None else -1
        self.adds_bos = bos is not None and bool(probe) and probe[0] == bos

    def tokenize(self, text: str, add_bos: bool | None = None) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return ([self.bos_id] if (self.adds_bos if add_bos is None else add_bos) else []) + ids

    def logits(self, tokens: list[int], *, reuse_prefix: bool = False, first: int = 0) -> Any:
        torch = self.torch
        if first >= len(tokens):
            return torch.zeros((0, self.n_vocab)).numpy()
        with torch.inference_mode():
            # logits_to_keep: the output layer runs on the last len - first positions only.
            out = self.model(input_ids=torch.tensor([tokens]), use_cache=False, logits_to_keep=len(tokens) - first)
        return out.logits[0].float().numpy()

    def close(self) -> None:
        del self.model


def _unread_embedding_bytes(model: Any) -> int:
    """Bytes of the input embedding a generated token does not read: all but one row, unless the
    embedding is also the output matrix (tied), when it is read whole (``sources.gguf.bytes_read_per_token``)."""
    emb, out = model.get_input_embeddings(), model.get_output_embeddings()
    w = getattr(emb, "weight", None)
    if w is None or (out is not None and getattr(out, "weight", None) is not None
                     and out.weight.data_ptr() == w.data_ptr()):
        return 0
    return int(w.numel() * w.element_size() * (1 - 1 / max(1, w.shape[0])))
