"""Vision-language models through llama.cpp's multimodal library (libmtmd, ``tools/mtmd``), via the bindings'
``llama_cpp.mtmd_cpp`` on our own build of the library.

libmtmd splits a prompt holding the image marker into chunks (text tokens, image slices), encodes each image
slice with the projector and feeds the embeddings to the text model; the rest is ordinary decoding.  Like every
native engine, only child processes import this (``edgeq.generation.vision_worker``, ``edgeq.benchmarking``'s
image measurement, the tests' logits check).
"""
from __future__ import annotations

import codecs
import ctypes
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .llamacpp import _QUIET, ERRORS, lib, load_error


@dataclass
class Prompt:
    """What a prompt with an image became and cost: the chunks as libmtmd made them, in order."""

    layout: list[tuple[str, Any]] = field(default_factory=list)  # ("text", [ids]) or ("image", n_tokens)
    image_tokens: int = 0  # positions the image slices take in the context
    image_chunks: int = 0  # slices: 1, or an overview and tiles (SmolVLM, MiniCPM-V)
    encode_s: float = 0.0  # the projector's encoding of the image slices
    prompt_s: float = 0.0  # everything else: the text tokens and the image embeddings through the text model
    n_past: int = 0
    logits: list[Any] = field(default_factory=list)  # with all_logits: one row per text token, in order


class VisionRunner:
    """A text model and its projector loaded together, one sequence."""

    def __init__(self, model: str | Path, mmproj: str | Path, *, threads: int, n_ctx: int, n_batch: int = 512) -> None:
        self.ll = ll = lib()
        from llama_cpp import mtmd_cpp

        self.M = M = mtmd_cpp
        M.mtmd_log_set(_QUIET[0], None)  # libmtmd's own log: errors only, as libllama's
        del ERRORS[:]
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = 0  # the CPU, as the projector (use_gpu off): what edgeq has measured and proven
        self.model = ll.llama_model_load_from_file(str(model).encode(), mparams)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {model}" + load_error())
        self.vocab = ll.llama_model_get_vocab(self.model)
        cparams = ll.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = n_ctx, n_batch, n_batch
        cparams.n_threads = cparams.n_threads_batch = threads
        self.ctx = ll.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {n_ctx} tokens")
        p = M.mtmd_context_params_default()
        p.use_gpu, p.n_threads, p.print_timings, p.warmup = False, threads, False, False
        self.mctx = M.mtmd_init_from_file(str(mmproj).encode(), self.model, p)
        if not self.mctx:
            raise RuntimeError(f"libmtmd could not load the projector {Path(mmproj).name} with {Path(model).name}"
                               + (f": {ERRORS[-1]}" if ERRORS else ""))
        if not M.mtmd_support_vision(self.mctx):  # an audio projector (Ultravox, Qwen2-Audio): no image input
            raise ValueError(f"the projector {Path(mmproj).name} encodes audio, not images")
        self.n_ctx, self.n_batch, self.n_vocab = n_ctx, n_batch, ll.llama_vocab_n_tokens(self.vocab)
        self.batch = ll.llama_batch_init(n_batch, 0, 1)
        self.marker = M.mtmd_default_marker().decode()

    def tokenize(self, prompt: str, image: str | Path) -> Any:
        """libmtmd's chunks for ``prompt`` (which holds ``self.marker`` once) and the image file."""
        M = self.M
        bmp = M.mtmd_helper_bitmap_init_from_file(self.mctx, str(image).encode(), False)
        if not bmp:
            raise ValueError(f"{Path(image).name} could not be decoded as an image")
        raw = prompt.encode()
        text = M.mtmd_input_text()
        text.text, text.text_len, text.add_special, text.parse_special = raw, len(raw), True, True
        chunks = M.mtmd_input_chunks_init()
        rc = M.mtmd_tokenize(self.mctx, chunks, ctypes.byref(text), (M.mtmd_bitmap_p_ctypes * 1)(bmp), 1)
        M.mtmd_bitmap_free(bmp)
        if rc != 0:
            M.mtmd_input_chunks_free(chunks)
            raise RuntimeError(f"libmtmd could not tokenize the prompt with the image (code {rc})")
        return chunks

    def evaluate(self, chunks: Any, *, all_logits: bool = False) -> Prompt:
        """Run the chunks through the model from an empty context; ``all_logits``: keep every text token's row
        (positions one after another, so not for M-RoPE models such as Qwen2-VL)."""
        import numpy as np

        M, ll, out = self.M, self.ll, Prompt()
        ll.llama_memory_clear(ll.llama_get_memory(self.ctx), True)
        n = M.mtmd_input_chunks_size(chunks)
        t_start = time.perf_counter()
        for i in range(n):
            chunk = M.mtmd_input_chunks_get(chunks, i)
            new_past = ll.llama_pos(out.n_past)  # the helpers add to it
            if M.mtmd_input_chunk_get_type(chunk) == M.MTMD_INPUT_CHUNK_TYPE_TEXT:
                count = ctypes.c_size_t(0)
                ptr = M.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                ids = [int(ptr[j]) for j in range(count.value)]
                out.layout.append(("text", ids))
                if all_logits:
                    out.logits += self._decode_all(ids, out.n_past)
                    out.n_past += len(ids)
                    continue
                rc = M.mtmd_helper_eval_chunk_single(self.mctx, self.ctx, chunk, out.n_past, 0, self.n_batch,
                                                     i == n - 1, ctypes.byref(new_past))
            else:
                t0 = time.perf_counter()
                if M.mtmd_encode_chunk(self.mctx, chunk) != 0:
                    raise RuntimeError("libmtmd could not encode the image")
                out.encode_s += time.perf_counter() - t0
                tokens = int(M.mtmd_input_chunk_get_n_tokens(chunk))
                out.layout.append(("image", tokens))
                out.image_tokens += tokens
                out.image_chunks += 1
                rc = M.mtmd_helper_decode_image_chunk(self.mctx, self.ctx, chunk, M.mtmd_get_output_embd(self.mctx),
                                                      out.n_past, 0, self.n_batch, ctypes.byref(new_past),
                                                      M.mtmd_helper_post_decode_callback(), None)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed on the prompt (code {rc}; context full?)")
            out.n_past = int(new_past.value)
        ll.llama_synchronize(self.ctx)
        out.prompt_s = time.perf_counter() - t_start - out.encode_s
        out.logits = [np.asarray(r) for r in out.logits]
        return out

    def _decode_all(self, ids: list[int], n_past: int) -> list[Any]:
        import numpy as np

        rows: list[Any] = []
        b, ll = self.batch, self.ll
        for start in range(0, len(ids), self.n_batch):
            part = ids[start:start + self.n_batch]
            b.n_tokens = len(part)
            for j, tok in enumerate(part):
                b.token[j], b.pos[j], b.n_seq_id[j], b.seq_id[j][0], b.logits[j] = tok, n_past + start + j, 1, 0, True
            if ll.llama_decode(self.ctx, b) != 0:
                raise RuntimeError("llama_decode failed (context full?)")
            got = np.ctypeslib.as_array(ll.llama_get_logits(self.ctx), shape=(len(part), self.n_vocab))
            rows += [r.copy() for r in got]
        return rows

    def generate(self, n_predict: int, *, temp: float, seed: int, on_text: Callable[[str], None]) -> tuple[list[int], str, float]:
        """Sample after the evaluated prompt (greedy at ``temp`` 0); return (tokens, finish reason, seconds)."""
        import numpy as np

        ll, rng = self.ll, np.random.default_rng(seed)
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        buf = ctypes.create_string_buffer(256)
        tokens: list[int] = []
        t0 = time.perf_counter()
        finish = "length"
        for step in range(n_predict):
            row = np.ctypeslib.as_array(ll.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,)).astype(np.float64)
            if not np.isfinite(row).all():
                raise FloatingPointError("the model's logits hold NaN or Inf")
            if temp <= 0:
                tok = int(row.argmax())
            else:
                z = np.exp((row - row.max()) / temp)
                tok = int(rng.choice(len(z), p=z / z.sum()))
            if ll.llama_vocab_is_eog(self.vocab, tok):
                finish = "stop"
                break
            tokens.append(tok)
            n = ll.llama_token_to_piece(self.vocab, tok, buf, len(buf), 0, False)
            if piece := utf8.decode(buf.raw[:max(n, 0)]):
                on_text(piece)
            if step < n_predict - 1:
                one = (ll.llama_token * 1)(tok)
                if ll.llama_decode(self.ctx, ll.llama_batch_get_one(one, 1)) != 0:
                    raise RuntimeError("llama_decode failed (context full? raise --ctx)")
        return tokens, finish, time.perf_counter() - t0

    def chat_prompt(self, user: str) -> str:
        """``user`` as one user message in the GGUF's chat template (with the assistant turn opened)."""
        ll = self.ll
        tmpl = ll.llama_model_chat_template(self.model, None)
        if not tmpl:
            raise ValueError("the model has no chat template (drop --chat)")
        msg = (ll.llama_chat_message * 1)()
        msg[0].role, msg[0].content = b"user", user.encode()
        size = 4 * len(user) + 1024
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = ll.llama_chat_apply_template(tmpl, msg, 1, True, buf, size)
            if n < 0:
                raise ValueError("llama.cpp cannot apply the model's chat template (drop --chat)")
            if n <= size:
                return buf.raw[:n].decode(errors="replace")
            size = n + 1
        raise ValueError("llama.cpp cannot apply the model's chat template (drop --chat)")

    def close(self) -> None:
        self.M.mtmd_free(self.mctx)
        self.ll.llama_batch_free(self.batch)
        self.ll.llama_free(self.ctx)
        self.ll.llama_model_free(self.model)
