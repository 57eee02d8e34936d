"""llama.cpp through llama-cpp-python, on our own build of libllama.

Only child processes import this module (bench and generate workers, the
isolated scorer, doctor's smoke test): a crash in native code then ends a
child, which the parent reports as one line, never edgeq itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..llamacpp import import_llama_cpp
from ..sources.gguf import read as read_gguf

_QUIET: list[Any] = []  # keeps the ctypes log callback alive
LOAD_LOG: list[str] = []  # the load-log lines that say where layers and buffers went (see rpc.parse_placement)


def _lib() -> Any:
    llama_cpp = import_llama_cpp()

    if not _QUIET:
        from ..llamacpp.rpc import LOG_PATTERN

        # llama.cpp logs every tensor it loads; print errors only (ggml level 4), keep placement lines.
        @llama_cpp.llama_log_callback
        def quiet(level: int, text: bytes, user_data: Any) -> None:
            line = text.decode(errors="replace")
            if level == 4:
                import sys

                sys.stderr.write(line)
            elif LOG_PATTERN.search(line):
                LOAD_LOG.append(line.rstrip())

        llama_cpp.llama_log_set(quiet, None)
        _QUIET.append(quiet)
    llama_cpp.llama_backend_init()
    return llama_cpp


class BatchRunner:
    """Prompt processing and greedy generation for B independent sequences (B = 1 is plain chat).

    Uses llama.cpp's own batch API (one sequence id per stream) rather than the
    high-level ``Llama`` object, which runs one sequence only.
    """

    def __init__(self, model_path: str | Path, *, threads: int, n_ctx: int, n_batch: int, n_seq: int,
                 n_gpu_layers: int = 0, tensor_split: list[float] | None = None) -> None:
        read_gguf(model_path)
        self.ll = ll = _lib()
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers
        if tensor_split:
            import ctypes

            # Kept on self: llama.cpp reads the array during the load.
            self._split = (ctypes.c_float * ll.LLAMA_MAX_DEVICES)(*tensor_split)
            mparams.tensor_split = self._split
        self.model = ll.llama_model_load_from_file(str(model_path).encode(), mparams)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {model_path}")
        self.vocab = ll.llama_model_get_vocab(self.model)
        cparams = ll.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = n_ctx, n_batch, min(n_batch, 512)
        cparams.n_seq_max, cparams.kv_unified = n_seq, True
        cparams.n_threads = cparams.n_threads_batch = threads
        self.ctx = ll.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {n_ctx} tokens")
        self.n_batch, self.n_vocab = n_batch, ll.llama_vocab_n_tokens(self.vocab)
        self.adds_bos = bool(ll.llama_vocab_get_add_bos(self.vocab))
        self.batch = ll.llama_batch_init(n_batch, 0, n_seq)

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

    def __init__(self, model_path: str | Path, *, n_ctx: int, threads: int) -> None:
        self.runner = r = BatchRunner(model_path, threads=threads, n_ctx=n_ctx, n_batch=n_ctx, n_seq=1)
        self.n_ctx, self.n_vocab, self.adds_bos = n_ctx, r.n_vocab, r.adds_bos
        self.bos_id = int(r.ll.llama_vocab_bos(r.vocab))
        self._tokens: list[int] = []
        self._logits: Any = None

    def tokenize(self, text: str, add_bos: bool | None = None) -> list[int]:
        return self.runner.tokenize(text, add_bos)

    def logits(self, tokens: list[int], *, reuse_prefix: bool = False) -> Any:
        """float32 array (len(tokens), n_vocab): row i is the prediction after tokens[: i + 1]."""
        import numpy as np

        if len(tokens) > self.n_ctx:
            raise ValueError(f"{len(tokens)} tokens do not fit a context of {self.n_ctx}")
        r, ll = self.runner, self.runner.ll
        keep = 0
        if reuse_prefix and self._logits is not None:
            while keep < min(len(tokens) - 1, len(self._tokens)) and tokens[keep] == self._tokens[keep]:
                keep += 1
        mem = ll.llama_get_memory(r.ctx)
        if keep:
            ll.llama_memory_seq_rm(mem, 0, keep, -1)
        else:
            ll.llama_memory_clear(mem, True)
        rows = [self._logits[:keep]] if keep else []
        for start in range(keep, len(tokens), r.n_batch):
            chunk = tokens[start:start + r.n_batch]
            r._decode([(t, start + i, 0, True) for i, t in enumerate(chunk)])
            ptr = ll.llama_get_logits(r.ctx)
            rows.append(np.ctypeslib.as_array(ptr, shape=(len(chunk), self.n_vocab)).copy())
        out = np.concatenate(rows) if len(rows) > 1 else rows[0]
        self._tokens, self._logits = list(tokens), out
        return out

    def close(self) -> None:
        self.runner.close()


_RPC_DEVICES: dict[str, str] = {}  # device name (RPC0…) -> endpoint, for servers registered in this process


def add_rpc_servers(endpoints: list[str]) -> dict[str, str]:
    """Register RPC servers with ggml before a model loads; return {device name: endpoint}.

    llama-cpp-python 0.3.36 ignores its ``rpc_servers`` argument
    (abetlen/llama-cpp-python#1914), so this does what llama.cpp's ``--rpc`` does
    (common/arg.cpp ``add_rpc_devices``) through the backend registry.  Probe the
    servers first (``rpc.probe_all``): ggml aborts the process on a bad one.
    """
    import ctypes

    from ..llamacpp import find_toolchain

    _lib()  # loads libllama and with it libggml, which dlopen hands back below
    tc = find_toolchain()
    g = ctypes.CDLL(str(tc.bin_dir / tc.libllama.name.replace("llama", "ggml", 1)))
    vp, cp = ctypes.c_void_p, ctypes.c_char_p
    for fn, res, args in (("ggml_backend_reg_by_name", vp, [cp]), ("ggml_backend_reg_get_proc_address", vp, [vp, cp]),
                          ("ggml_backend_register", None, [vp]), ("ggml_backend_reg_dev_count", ctypes.c_size_t, [vp]),
                          ("ggml_backend_reg_dev_get", vp, [vp, ctypes.c_size_t]), ("ggml_backend_dev_name", cp, [vp])):
        getattr(g, fn).restype, getattr(g, fn).argtypes = res, args
    rpc_reg = g.ggml_backend_reg_by_name(b"RPC")
    addr = rpc_reg and g.ggml_backend_reg_get_proc_address(rpc_reg, b"ggml_backend_rpc_add_server")
    if not addr:
        from ..errors import ToolchainError
        from ..llamacpp import SETUP_HINT

        raise ToolchainError("this llama.cpp build has no RPC backend (GGML_RPC is off).", hint=SETUP_HINT)
    add_server = ctypes.CFUNCTYPE(vp, cp)(addr)
    for ep in endpoints:
        if ep in _RPC_DEVICES.values():
            continue
        reg = add_server(ep.encode())
        g.ggml_backend_register(reg)
        for i in range(g.ggml_backend_reg_dev_count(reg)):
            _RPC_DEVICES[g.ggml_backend_dev_name(g.ggml_backend_reg_dev_get(reg, i)).decode()] = ep
    return {d: ep for d, ep in _RPC_DEVICES.items() if ep in endpoints}


def rpc_tensor_split(devices: dict[str, str], endpoints: list[str], weights: list[float]) -> list[float]:
    """Per-server weights → per-device weights (a server may expose several devices)."""
    per = {ep: [d for d, e in devices.items() if e == ep] for ep in endpoints}
    return [w / len(per[ep]) for ep, w in zip(endpoints, weights) for _ in per[ep]]


def stream_generate(model_path: str | Path, prompt: str, *, n_predict: int, temp: float, seed: int, n_ctx: int,
                    threads: int, chat: bool, rpc: list[str], no_local: bool, tensor_split: list[float] | None,
                    on_event: Any) -> dict[str, Any]:
    """Load a GGUF (layers over RPC servers if given), stream the continuation to ``on_event``, return figures.

    Events: ``{"event": "loaded", ...}``, then ``{"event": "text", "text": ...}`` per piece.
    """
    import time

    from ..llamacpp.rpc import layer_split, parse_placement

    info = read_gguf(model_path)
    n_layer = int(info.block_count or 0)
    ll = _lib()
    devices = add_rpc_servers(rpc) if rpc else {}
    ngl, split = 0, None
    if rpc:
        ngl, weights = layer_split(n_layer, len(rpc), tensor_split, local=not no_local)
        split = rpc_tensor_split(devices, rpc, weights)
    from llama_cpp import Llama

    LOAD_LOG.clear()
    t0 = time.perf_counter()
    llm = Llama(model_path=str(model_path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, seed=seed,
                n_gpu_layers=ngl, tensor_split=split, verbose=False)
    load_s = time.perf_counter() - t0
    try:
        placement = parse_placement(LOAD_LOG, devices)
        on_event({"event": "loaded", "load_s": load_s})
        ll.llama_perf_context_reset(llm.ctx)
        chunks: Any  # llama-cpp-python's chat and text streams are differently typed dicts of the same shape here
        if chat:
            chunks = llm.create_chat_completion(messages=[{"role": "user", "content": prompt}], max_tokens=n_predict,
                                                temperature=temp, seed=seed, stream=True)
        else:
            chunks = llm.create_completion(prompt, max_tokens=n_predict, temperature=temp, seed=seed, stream=True)
        pieces: list[str] = []
        finish = None
        for ch in chunks:
            c = ch["choices"][0]
            text = c["delta"].get("content") if chat else c["text"]
            finish = c.get("finish_reason") or finish
            if text:
                pieces.append(text)
                on_event({"event": "text", "text": text})
        perf = ll.llama_perf_context(llm.ctx)
    finally:
        llm.close()
    # The last sampled token is never decoded: n_eval is one short when generation stopped on -n.
    n_gen = int(perf.n_eval) + (1 if finish == "length" else 0)
    return {"text": "".join(pieces), "finish_reason": finish, "prompt_tokens": int(perf.n_p_eval),
            "generated_tokens": n_gen, "prompt_s": perf.t_p_eval_ms / 1000, "gen_s": perf.t_eval_ms / 1000,
            "decoded_tokens": int(perf.n_eval), "load_s": load_s, "n_layer": n_layer,
            "offloaded_layers": ngl if ngl >= 0 else n_layer + 1, "placement": [vars(p) for p in placement]}
