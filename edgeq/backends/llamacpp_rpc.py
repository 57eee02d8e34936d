"""RPC servers as ggml devices in this process, before a model loads (the engine side of ``llamacpp.rpc``)."""
from __future__ import annotations

import ctypes

from ..errors import ToolchainError
from ..llamacpp import SETUP_HINT, find_toolchain
from .llamacpp import lib

_RPC_DEVICES: dict[str, str] = {}  # device name (RPC0…) -> endpoint, for servers registered in this process


def add_rpc_servers(endpoints: list[str]) -> dict[str, str]:
    """Register RPC servers with ggml before a model loads; return {device name: endpoint}.

    llama-cpp-python 0.3.36 ignores its ``rpc_servers`` argument
    (abetlen/llama-cpp-python#1914), so this does what llama.cpp's ``--rpc`` does
    (common/arg.cpp ``add_rpc_devices``) through the backend registry.  Probe the
    servers first (``rpc.probe_all``): ggml aborts the process on a bad one.
    """
    lib()  # loads libllama and with it libggml, which dlopen hands back below
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
