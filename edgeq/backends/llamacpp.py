"""llama.cpp through llama-cpp-python, on our own build of libllama.

Only child processes import this module (bench and generate workers, the
isolated scorer, doctor's smoke test): a crash in native code then ends a
child, which the parent reports as one line, never edgeq itself.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..compute import for_resolved
from ..llamacpp import import_llama_cpp
from ..llamacpp.rpc import LOG_PATTERN
from ..sources.gguf import read as read_gguf

_QUIET: list[Any] = []  # keeps the ctypes log callback alive
LOAD_LOG: list[str] = []  # the load-log lines that say where layers and buffers went (see rpc.parse_placement)
ERRORS: list[str] = []  # llama.cpp's error lines, so a failed load can say why


def lib() -> Any:
    llama_cpp = import_llama_cpp()

    if not _QUIET:
        # llama.cpp logs every tensor it loads; print errors only (ggml level 4), keep placement lines.
        @llama_cpp.llama_log_callback
        def quiet(level: int, text: bytes, user_data: Any) -> None:
            line = text.decode(errors="replace")
            if level == 4:
                import sys

                sys.stderr.write(line)
                if line.strip():
                    ERRORS.append(line.strip())
            elif LOG_PATTERN.search(line):
                LOAD_LOG.append(line.rstrip())

        llama_cpp.llama_log_set(quiet, None)
        _QUIET.append(quiet)
    llama_cpp.llama_backend_init()
    return llama_cpp


def offloaded_layers() -> int | None:
    """The layers llama.cpp says the last load offloaded ("offloaded 31/31 layers to GPU"), in its own words:
    what reached it, not what edgeq meant to ask.  None where it logged no such line."""
    for line in reversed(LOAD_LOG):
        if m := re.search(r"offloaded (\d+)/\d+ layers", line):
            return int(m.group(1))
    return None


def attach_lora(ll: Any, model: Any, ctx: Any, path: str | Path, scale: float) -> Any:
    """Load the LoRA adapter GGUF ``path`` for ``model`` and apply it at ``scale`` on ``ctx`` (llama.cpp's
    ``--lora-scaled``); return the adapter, which llama.cpp frees with the model."""
    import ctypes

    del ERRORS[:]
    adapter = ll.llama_adapter_lora_init(model, str(path).encode())
    if not adapter:
        raise RuntimeError(f"llama.cpp could not load the adapter {path}" + load_error())
    adapters = (ll.llama_adapter_lora_p_ctypes * 1)(adapter)
    scales = (ctypes.c_float * 1)(scale)
    if ll.llama_set_adapters_lora(ctx, adapters, 1, scales) != 0:
        raise RuntimeError(f"llama.cpp could not apply the adapter {path}" + load_error())
    return adapter


def load_error() -> str:
    """The reason llama.cpp logged for the last failed load, as ': reason' (its first specific line), or ''."""
    for line in ERRORS:
        if "failed to load model" not in line and "error loading model:" in line:
            return ": " + line.split("error loading model:", 1)[1].strip()
    return f": {ERRORS[0]}" if ERRORS else ""


class BatchRunner:
    """Prompt processing and greedy generation for B independent sequences (B = 1 is plain chat).

    Uses llama.cpp's own batch API (one sequence id per stream) rather than the
    high-level ``Llama`` object, which runs one sequence only.
    """

    def __init__(self, model_path: str | Path, *, threads: int, n_ctx: int, n_batch: int, n_seq: int,
                 n_gpu_layers: int = 0, tensor_split: list[float] | None = None, op_offload: bool = True) -> None:
        read_gguf(model_path)
        self.ll = ll = lib()
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers
        if tensor_split:
            import ctypes

            # Kept on self: llama.cpp reads the array during the load.
            self._split = (ctypes.c_float * ll.LLAMA_MAX_DEVICES)(*tensor_split)
            mparams.tensor_split = self._split
        del ERRORS[:]
        del LOAD_LOG[:]  # this load's lines only (an RPC caller reads its placement from them after it)
        self.model = ll.llama_model_load_from_file(str(model_path).encode(), mparams)
        self.offloaded_layers = offloaded_layers()
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {model_path}" + load_error())
        self.vocab = ll.llama_model_get_vocab(self.model)
        cparams = ll.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = n_ctx, n_batch, min(n_batch, 512)
        cparams.n_seq_max, cparams.kv_unified = n_seq, True
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.op_offload = op_offload  # False on --device cpu: no CPU-resident weight's batch moves to a GPU
        self.ctx = ll.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {n_ctx} tokens")
        self.n_batch, self.n_vocab = n_batch, ll.llama_vocab_n_tokens(self.vocab)
        self.adds_bos = bool(ll.llama_vocab_get_add_bos(self.vocab))
        self.batch = ll.llama_batch_init(n_batch, 0, n_seq)

    def use_lora(self, path: str | Path | None, scale: float = 1.0) -> None:
        """Apply the LoRA adapter GGUF ``path`` at ``scale`` from the next decode on (None: nothing)."""
        if path:
            self.lora = attach_lora(self.ll, self.model, self.ctx, path, scale)

    def tokenize(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Tokens as llama-perplexity makes them: BOS only if the GGUF says to add one."""
        import ctypes

        raw = text.encode()
        bos = self.adds_bos if add_bos is None else add_bos
        size = len(raw) + 8
        for _ in range(2):
            buf = (self.ll.llama_token * size)()
            n = self.ll.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), bos, False)
            if n >= 0:
                break
            size = -n  # byte-fallback vocabularies can make more tokens than bytes: it says how many
        if n < 0:
            raise RuntimeError("tokenization failed")
        return list(ctypes.cast(buf, ctypes.POINTER(self.ll.llama_token))[:n])

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        b = self.batch
        b.n_tokens = len(items)
        for i, (tok, pos, seq, logits) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i] = tok, pos, 1
            b.seq_id[i][0], b.logits[i] = seq, logits
        if self.ll.llama_decode(self.ctx, b) != 0:
            raise RuntimeError("llama_decode failed (context full?)")

    def _argmax(self, i: int) -> int:
        import numpy as np

        ptr = self.ll.llama_get_logits_ith(self.ctx, i)
        return int(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).argmax())

    def run(self, prompts: list[list[int]], n_gen: int) -> tuple[float, float, list[list[int]]]:
        """Return (prompt seconds, generation seconds, generated tokens per sequence)."""
        import time

        self.ll.llama_memory_clear(self.ll.llama_get_memory(self.ctx), True)
        items = [(t, p, s, p == len(toks) - 1) for s, toks in enumerate(prompts) for p, t in enumerate(toks)]
        last_index: dict[int, int] = {}
        t0 = time.perf_counter()
        for start in range(0, len(items), self.n_batch):
            chunk = items[start:start + self.n_batch]
            self._decode(chunk)
            last_index.update({seq: i for i, (_, _, seq, want) in enumerate(chunk) if want})
        nxt = [self._argmax(last_index[s]) for s in range(len(prompts))]
        self.ll.llama_synchronize(self.ctx)
        t1 = time.perf_counter()
        out: list[list[int]] = [[t] for t in nxt]
        for step in range(n_gen):  # n_gen decode steps, as llama-bench's tg counts them
            self._decode([(tok, len(prompts[s]) + step, s, True) for s, tok in enumerate(nxt)])
            nxt = [self._argmax(i) for i in range(len(prompts))]
            for s, tok in enumerate(nxt):
                out[s].append(tok)
        self.ll.llama_synchronize(self.ctx)
        return t1 - t0, time.perf_counter() - t1, out

    def decode(self, tokens: list[int]) -> str:
        import ctypes

        pieces = []
        buf = ctypes.create_string_buffer(256)
        for t in tokens:
            n = self.ll.llama_token_to_piece(self.vocab, t, buf, len(buf), 0, False)
            pieces.append(buf.raw[:max(n, 0)])
        return b"".join(pieces).decode("utf-8", errors="replace")

    def peak_gpu_bytes(self) -> int | None:
        return None  # llama.cpp runs on the CPU (or Metal's unified memory) here: no separate GPU peak

    def close(self) -> None:
        self.ll.llama_batch_free(self.batch)
        self.ll.llama_free(self.ctx)
        self.ll.llama_model_free(self.model)


class LogitScorer:
    """Logits for every position of a token sequence (perplexity, KL-divergence, multiple choice).

    Built on ``BatchRunner``'s context with one sequence. ``reuse_prefix`` keeps
    the KV cache of the tokens shared with the previous call, so the endings of a
    multiple-choice item cost only their own tokens.
    """

    kind = "gguf"

    def __init__(self, model_path: str | Path, *, n_ctx: int, threads: int, device: str = "cpu") -> None:
        on = for_resolved(device)
        self.runner = r = BatchRunner(model_path, threads=threads, n_ctx=n_ctx, n_batch=n_ctx, n_seq=1,
                                      n_gpu_layers=on.n_gpu_layers, op_offload=on.op_offload)
        self.n_ctx, self.n_vocab, self.adds_bos = n_ctx, r.n_vocab, r.adds_bos
        self.bos_id = int(r.ll.llama_vocab_bos(r.vocab))
        self._tokens: list[int] = []
        self._logits: Any = None
        self._buffer: Any = None

    def use_lora(self, path: str | Path | None, scale: float = 1.0) -> None:
        """Score with the LoRA adapter GGUF ``path`` applied at ``scale`` (None: the model alone)."""
        self.runner.use_lora(path, scale)

    def tokenize(self, text: str, add_bos: bool | None = None) -> list[int]:
        return self.runner.tokenize(text, add_bos)

    def logits(self, tokens: list[int], *, reuse_prefix: bool = False, first: int = 0) -> Any:
        """float32 array (len(tokens) - first, n_vocab): row i is the prediction after tokens[: first + i + 1].
        It lives in a buffer the next call reuses (fresh memory for every window cost more than the copy).

        llama.cpp computes output rows only where asked, so rows before ``first`` cost nothing.
        """
        import numpy as np

        if len(tokens) > self.n_ctx:
            raise ValueError(f"{len(tokens)} tokens do not fit a context of {self.n_ctx}")
        r, ll = self.runner, self.runner.ll
        keep = 0
        if reuse_prefix and not first and self._logits is not None:
            while keep < min(len(tokens) - 1, len(self._tokens)) and tokens[keep] == self._tokens[keep]:
                keep += 1
        mem = ll.llama_get_memory(r.ctx)
        if keep:
            ll.llama_memory_seq_rm(mem, 0, keep, -1)
        else:
            ll.llama_memory_clear(mem, True)
        if self._buffer is None or len(self._buffer) < len(tokens) - first:
            grown = np.empty((max(len(tokens) - first, self.n_ctx // 2), self.n_vocab), np.float32)
            if keep:
                grown[:keep] = self._buffer[:keep]
            self._buffer = grown
        # With a kept prefix (first is 0 then), its rows are already where this call wants them.
        out = self._buffer[:len(tokens) - first]
        for start in range(keep, len(tokens), r.n_batch):
            chunk = tokens[start:start + r.n_batch]
            r._decode([(t, start + i, 0, start + i >= first) for i, t in enumerate(chunk)])
            n_out = sum(1 for i in range(len(chunk)) if start + i >= first)
            if n_out:
                at = max(start, first) - first
                out[at:at + n_out] = np.ctypeslib.as_array(ll.llama_get_logits(r.ctx), shape=(n_out, self.n_vocab))
        # A prefix can be reused only when every row of it was made.
        self._tokens, self._logits = (list(tokens), out) if not first else ([], None)
        return out

    def close(self) -> None:
        self.runner.close()
