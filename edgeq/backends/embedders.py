"""Sentence embedders: llama.cpp on a GGUF, and sentence-transformers on the checkpoint (fp32, bf16, bnb-int8).

Only the embedding worker imports this module (``python -m edgeq.embeddings.worker``): llama.cpp and torch
then run in a child process, and a native crash ends the child, never edgeq.  Both embedders take a list of
texts and one batch size and return float32 rows, the head applied (pooling, and normalisation where the model
declares it), so that eval compares the same thing from both sides.

Texts longer than the model's ``max_seq_length`` are cut as sentence-transformers cuts them: the first
``max_seq_length - 1`` tokens and the closing separator.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .llamacpp import lib, load_error
from .transformers import load_kwargs

ST_VARIANTS = ("fp32", "bf16", "bnb-int8")


class LlamaEmbedder:
    """llama.cpp's embedding path (its pooling from the GGUF's header), through llama-cpp-python's context.

    An encoder attends over a whole batch in one micro-batch, so the context must hold every token of the largest
    call, and its compute buffer (attention scores: heads × tokens², several of them) grows with the square of
    it: the texts are tokenized first, by the vocabulary alone, and the context sized to what the calls need."""

    def __init__(self, path: str | Path, *, threads: int, normalize: bool, max_seq_length: int | None,
                 texts: list[str], batches: list[int]) -> None:
        llama_cpp = lib()
        self.np = __import__("numpy")
        self.llama_cpp, self.normalize = llama_cpp, normalize
        self._tokens = self._tokenize_all(path, texts, max_seq_length)
        lengths = [len(self._tokens[t]) for t in texts] or [1]
        need = max(sum(lengths[i: i + b]) for b in batches for i in range(0, len(lengths), b))
        # A multiple of 256: llama.cpp pads the context to one, and a micro-batch of another size then fails a
        # shape check in its pooling graph (GGML_ASSERT ggml_can_mul_mat at 640 tokens, not at 512 or 768).
        n = -(-max(need, 256) // 256) * 256
        try:
            self.llm = llama_cpp.Llama(model_path=str(path), embedding=True, n_ctx=n, n_batch=n, n_ubatch=n,
                                       n_threads=threads, n_threads_batch=threads, verbose=False)
        except ValueError as e:
            raise RuntimeError(f"llama.cpp could not load {Path(path).name}{load_error() or f': {e}'}") from None
        self.n_embd = self.llm.n_embd()

    def _tokenize_all(self, path: str | Path, texts: list[str], max_seq_length: int | None) -> dict[str, list[int]]:
        from llama_cpp import _internals

        params = self.llama_cpp.llama_model_default_params()
        params.vocab_only = True
        vocab = _internals.LlamaModel(path_model=str(path), params=params, verbose=False)
        try:
            limit = min(max_seq_length or vocab.n_ctx_train(), vocab.n_ctx_train())
            out = {}
            for t in texts:
                toks = vocab.tokenize(t.encode("utf-8"), add_bos=True, special=False)
                out[t] = toks if len(toks) <= limit else [*toks[: limit - 1], toks[-1]]
            return out
        finally:
            vocab.close()

    def tokens(self, text: str) -> list[int]:
        return self._tokens[text]

    def embed(self, texts: list[str], batch: int) -> Any:
        """float32 rows, one per text, ``batch`` texts per llama.cpp call."""
        out = []
        for i in range(0, len(texts), batch):
            out.append(self._one_call([self.tokens(t) for t in texts[i: i + batch]]))
        return self.np.concatenate(out)

    def _one_call(self, seqs: list[list[int]]) -> Any:
        b, ctx = self.llm._batch, self.llm._ctx  # the Llama object's own batch and context
        b.reset()
        for seq_id, toks in enumerate(seqs):
            b.add_sequence(toks, seq_id, False)
        ctx.kv_cache_clear()
        ctx.decode(b)
        rows = self.np.array([self.llama_cpp.llama_get_embeddings_seq(ctx.ctx, i)[: self.n_embd]
                              for i in range(len(seqs))], dtype=self.np.float32)
        b.reset()
        return _l2(self.np, rows) if self.normalize else rows

    def close(self) -> None:
        self.llm.close()


class STEmbedder:
    """sentence-transformers on the checkpoint folder: its own modules (Transformer, Pooling, Normalize)."""

    def __init__(self, folder: str | Path, variant: str, *, threads: int, max_seq_length: int | None) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        kwargs = load_kwargs(variant, "cpu")
        self.model = SentenceTransformer(str(folder), device="cpu", model_kwargs=kwargs, local_files_only=True)
        if max_seq_length:
            self.model.max_seq_length = max_seq_length
        self.model.eval()
        self.n_params = sum(p.numel() for p in self.model.parameters())

    def embed(self, texts: list[str], batch: int) -> Any:
        import torch

        with torch.inference_mode():
            rows = self.model.encode(texts, batch_size=batch, convert_to_numpy=True, show_progress_bar=False)
        return rows.astype("float32")

    def close(self) -> None:
        del self.model


def _l2(np: Any, rows: Any) -> Any:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


__all__ = ["ST_VARIANTS", "LlamaEmbedder", "STEmbedder"]
