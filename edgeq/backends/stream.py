"""``edgeq run``'s engine: load a GGUF (its layers over RPC servers if asked) and stream the continuation."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..compute import for_resolved
from ..llamacpp.rpc import layer_split, parse_placement
from ..sources.gguf import read as read_gguf
from ..sources.gguf_values import non_finite_logits_error
from .llamacpp import LOAD_LOG, attach_lora, lib, offloaded_layers
from .llamacpp_rpc import add_rpc_servers, rpc_tensor_split


def stream_generate(model_path: str | Path, prompt: str, *, n_predict: int, temp: float, seed: int, n_ctx: int,
                    threads: int, chat: bool, rpc: list[str], no_local: bool, tensor_split: list[float] | None,
                    on_event: Any, device: str = "cpu", lora: str | None = None,
                    lora_scale: float = 1.0) -> dict[str, Any]:
    """Load a GGUF (layers over RPC servers if given, else on ``device``: a name ``compute.choose`` resolved),
    stream the continuation to ``on_event``, return figures.

    With ``lora`` the adapter GGUF is applied at ``lora_scale`` (llama.cpp's ``--lora-scaled``).

    Events: ``{"event": "loaded", ...}``, then ``{"event": "text", "text": ...}`` per piece.
    """
    info = read_gguf(model_path)
    n_layer = int(info.block_count or 0)
    ll = lib()
    devices = add_rpc_servers(rpc) if rpc else {}
    on = for_resolved(device)
    ngl, split = on.n_gpu_layers, None
    if rpc:
        ngl, weights = layer_split(n_layer, len(rpc), tensor_split, local=not no_local)
        split = rpc_tensor_split(devices, rpc, weights)
    from llama_cpp import Llama

    LOAD_LOG.clear()
    t0 = time.perf_counter()
    llm = Llama(model_path=str(model_path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, seed=seed,
                n_gpu_layers=ngl, tensor_split=split, op_offload=on.op_offload, verbose=False)
    try:
        if lora:
            attach_lora(ll, llm.model, llm.ctx, lora, lora_scale)
        load_s = time.perf_counter() - t0
        placement = parse_placement(LOAD_LOG, devices)
        told = offloaded_layers()  # llama.cpp's own count of what it offloaded
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
        if not "".join(pieces).strip(" ."):  # nothing, or the dots NaN logits sample
            _refuse_non_finite_logits(ll, llm, model_path)
    finally:
        llm.close()
    # Stopped on -n, exactly n were generated.  llama.cpp's counter cannot say so: the last sampled token is never
    # decoded, and a one-token prompt's batch is counted as a generated token.
    n_gen = n_predict if finish == "length" and n_predict and n_predict > 0 else int(perf.n_eval)
    return {"text": "".join(pieces), "finish_reason": finish, "prompt_tokens": int(perf.n_p_eval),
            "generated_tokens": n_gen, "prompt_s": perf.t_p_eval_ms / 1000, "gen_s": perf.t_eval_ms / 1000,
            "decoded_tokens": int(perf.n_eval), "load_s": load_s, "n_layer": n_layer,
            "offloaded_layers": told if told is not None else min(ngl, n_layer + 1) if ngl >= 0 else n_layer + 1, "placement": [vars(p) for p in placement]}


def _refuse_non_finite_logits(ll: Any, llm: Any, model_path: str | Path) -> None:
    """Nothing printed: say so when the model's last logits are NaN/Inf, instead of printing nothing and exit 0.

    (llama-cpp-python keeps a logits row per token only with ``logits_all``; the context's own last row is read.)
    """
    import numpy as np

    ptr = ll.llama_get_logits_ith(llm.ctx, -1)
    if ptr and not np.isfinite(np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))).all():
        raise non_finite_logits_error(model_path, "it can generate nothing")
