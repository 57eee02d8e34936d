"""Does llama.cpp run on this CPU? A tiny model, quantized, generating in child processes.

``edgeq doctor`` runs this; set-up runs doctor, so a build whose CPU kernels
crash or compute nonsense is found before any real work. Each type runs twice
in a process of its own: through edgeq's runner (``backends.probe``: the Python
side, eval's scorer and bench's worker) and through ``llama-bench`` (the tools,
which choose their CPU level themselves). A crash is then one failed check
naming the signal; and a kernel that computes wrong numbers shows as logits that
differ from those of the same weights dequantized (by gguf-py) into an F32 file.
"""
from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import config, system
from ..compute import for_resolved
from ..errors import EdgeqError, from_dict
from ..llamacpp import Toolchain, cpu_variants, crash_error, json_array, run_tool, run_worker_once
from ..llamacpp.quantize import quantize
from ..quants import parse_quant

SMOKE_TYPES = ("Q8_0", "Q4_K_M", "Q4_0")  # Q4_0 is the type ggml repacks on x86; AMX takes all three
# Against the same weights dequantized to F32, only the activations' own 8-bit rounding remains.
MIN_COSINE = 0.99
TIMEOUT_S = 120

# ggml's x86 CPU levels (ggml/src/CMakeLists.txt) and how it scores them (arch/x86/cpu-feats.cpp):
# a level scores 0 if the CPU lacks one of its features, else 1 plus a weight per feature.
_WEIGHT = {"FMA": 1, "F16C": 2, "SSE42": 4, "BMI2": 8, "AVX": 16, "AVX2": 32, "AVX_VNNI": 64, "AVX512": 128,
           "AVX512_VBMI": 256, "AVX512_BF16": 512, "AVX512_VNNI": 1024, "AMX_INT8": 2048}
_FLAGS = {"FMA": {"fma"}, "F16C": {"f16c"}, "SSE42": {"sse4_2"}, "BMI2": {"bmi2"}, "AVX": {"avx"}, "AVX2": {"avx2"},
          "AVX_VNNI": {"avx_vnni"}, "AVX512": {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"},
          "AVX512_VBMI": {"avx512vbmi"}, "AVX512_BF16": {"avx512_bf16"}, "AVX512_VNNI": {"avx512_vnni"},
          "AMX_INT8": {"amx_int8"}}
_HASWELL = ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2")
LEVELS: dict[str, tuple[str, ...]] = {
    "x64": (), "sse42": ("SSE42",), "sandybridge": ("SSE42", "AVX"), "ivybridge": ("SSE42", "AVX", "F16C"),
    "piledriver": ("SSE42", "AVX", "F16C", "FMA"), "haswell": _HASWELL, "alderlake": (*_HASWELL, "AVX_VNNI"),
    "skylakex": (*_HASWELL, "AVX512"), "cannonlake": (*_HASWELL, "AVX512", "AVX512_VBMI"),
    "cascadelake": (*_HASWELL, "AVX512", "AVX512_VNNI"),
    "icelake": (*_HASWELL, "AVX512", "AVX512_VBMI", "AVX512_VNNI"),
    "cooperlake": (*_HASWELL, "AVX512", "AVX512_VNNI", "AVX512_BF16"),
    "zen4": (*_HASWELL, "AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16"),
    "sapphirerapids": (*_HASWELL, "AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16", "AMX_INT8"),
}


def level_score(level: str, flags: set[str]) -> int:
    """ggml's score of a CPU level on a CPU with these /proc/cpuinfo flags (0: it cannot run there)."""
    feats = LEVELS.get(level)
    if feats is None or any(not _FLAGS[f] <= flags for f in feats):
        return 0
    return 1 + sum(_WEIGHT[f] for f in feats)


@dataclass
class SmokeRun:
    """One quant type through one path (``edgeq`` = our runner, ``llama-bench`` = the tool)."""

    type: str
    path: str  # "edgeq" (our runner) | "llama-bench" | "llama-quantize" (making the file failed)
    ok: bool
    detail: str
    crash_signal: str | None = None
    cosine_vs_f32: float | None = None


@dataclass
class CpuPaths:
    """What ggml runs on this host: the CPU level it loaded and the features llama.cpp reports."""

    variant: str | None  # the ggml CPU level loaded (None: built in, no levels)
    built: list[str]  # the levels this build has
    expected: str | None  # the best built level this CPU can run (or the one EDGEQ_CPU_VARIANT forces)
    features: dict[str, bool] = field(default_factory=dict)  # AVX2, AVX512, AMX_INT8, REPACK, ... from llama.cpp
    system_info: str = ""

    @property
    def amx(self) -> bool:
        return any(v for k, v in self.features.items() if k.startswith("AMX"))


@dataclass
class SmokeReport:
    ok: bool
    runs: list[SmokeRun]
    cpu: CpuPaths | None
    rpc: bool = False  # libllama sees ggml's RPC backend


def expected_level(built: list[str], flags: set[str]) -> str | None:
    """The level ggml should load here: of those built, the best-scoring one this CPU can run."""
    scored = [(level_score(v, flags), v) for v in built]
    best = max(scored, default=(0, None))
    return best[1] if best[0] > 0 else None


def parse_features(system_info: str) -> dict[str, bool]:
    """``CPU : SSE3 = 1 | AVX2 = 1 | ... |`` → {"SSE3": True, "AVX2": True, ...}."""
    return {k: v == "1" for k, v in re.findall(r"([A-Z0-9_]+) = ([01])", system_info)}


N_VOCAB, N_EMBD, N_FF, N_HEAD, N_KV, N_LAYER = 512, 256, 512, 4, 2, 2


def tiny_weights() -> dict[str, object]:
    """Seeded random weights of a 2-layer llama; widths are multiples of 256, so no K-quant falls back."""
    import numpy as np

    rng = np.random.default_rng(0)
    head = N_EMBD // N_HEAD

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    w: dict[str, object] = {"token_embd.weight": mat(N_VOCAB, N_EMBD)}
    for i in range(N_LAYER):
        for name, shape in (("attn_q", (N_EMBD, N_EMBD)), ("attn_k", (N_KV * head, N_EMBD)),
                            ("attn_v", (N_KV * head, N_EMBD)), ("attn_output", (N_EMBD, N_EMBD)),
                            ("ffn_gate", (N_FF, N_EMBD)), ("ffn_up", (N_FF, N_EMBD)), ("ffn_down", (N_EMBD, N_FF))):
            w[f"blk.{i}.{name}.weight"] = mat(*shape)
        w[f"blk.{i}.attn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
        w[f"blk.{i}.ffn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
    w["output_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
    w["output.weight"] = mat(N_VOCAB, N_EMBD)
    return w


def write_tiny_model(path: Path, weights: dict[str, object]) -> Path:
    """An F32 GGUF of ``weights`` (about 2 MiB) with a byte-level SPM vocabulary of 512 tokens."""
    from gguf import GGUFWriter, TokenType

    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"\u2581w{i}" for i in range(N_VOCAB - len(tokens))]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    types += [TokenType.NORMAL] * (N_VOCAB - len(types))
    w = GGUFWriter(str(path), "llama")
    w.add_name("edgeq-smoke")
    w.add_context_length(256)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_KV)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * N_VOCAB)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    for name, arr in weights.items():
        w.add_tensor(name, arr)  # type: ignore[arg-type]
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def dequantized(path: Path) -> dict[str, object]:
    """Every tensor of a quantized GGUF widened back to float32 by gguf-py (not by ggml's kernels)."""
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize

    out: dict[str, object] = {}
    for t in GGUFReader(path).tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        out[t.name] = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
    return out


def probe(path: Path, *, threads: int, device: str = "cpu") -> dict[str, object]:
    """Run ``backends.probe`` on one file in a child; its JSON, or raise the crash as one error."""
    try:
        rc, stdout, tail = run_worker_once("edgeq.backends.probe", "", timeout=TIMEOUT_S,
                                           args=[str(path), str(threads), device])
    except subprocess.TimeoutExpired:
        raise EdgeqError(f"the smoke test of {path.name} did not finish within {TIMEOUT_S} s.") from None
    lines = stdout.strip().splitlines()
    reply = json.loads(lines[-1]) if lines else {}
    if "error" in reply:
        raise from_dict(reply)
    if rc != 0 or not lines:
        raise crash_error(rc, f"while generating with {path.name}", tail=tail) or EdgeqError(
            f"the smoke test of {path.name} failed (exit {rc}): {tail[-1] if tail else 'no output'}")
    return dict(reply)


def _cosine(a: list[float], b: list[float]) -> float:
    import numpy as np

    x, y = np.asarray(a), np.asarray(b)
    denom = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y / denom) if denom > 0 and np.isfinite(denom) else 0.0


def _ours(qtype: str, path: Path, twin: Path, threads: int, device: str) -> tuple[SmokeRun, dict[str, object] | None]:
    """``path`` through edgeq's runner, its logits checked against ``twin`` (the same weights, dequantized, in F32)."""
    try:
        ref = probe(twin, threads=threads, device=device)
        out = probe(path, threads=threads, device=device)
    except EdgeqError as e:
        return SmokeRun(qtype, "edgeq", False, e.message, crash_signal=getattr(e, "signal_name", None)), None
    cos = _cosine(out["logits"], ref["logits"])  # type: ignore[arg-type]
    ok = cos >= MIN_COSINE
    detail = (f"generated {len(out['tokens'])} tokens; logits vs its own weights in F32: cosine {cos:.5f} "  # type: ignore[arg-type]
              f"({'≥' if ok else 'BELOW'} {MIN_COSINE})")
    if not ok:
        detail += f": the {qtype} kernels compute wrong numbers on this CPU"
    return SmokeRun(qtype, "edgeq", ok, detail, cosine_vs_f32=round(cos, 6)), out


def _tool(qtype: str, path: Path, tc: Toolchain, threads: int, device: str) -> SmokeRun:
    try:
        out = run_tool([tc.tool("llama-bench"), "-m", path, "-t", str(threads), "-p", "32", "-n", "8", "-r", "1",
                        "-o", "json", *for_resolved(device).tool_args("llama-bench")], name="llama-bench",
                       timeout=TIMEOUT_S, tail_lines=400)
    except EdgeqError as e:
        return SmokeRun(qtype, "llama-bench", False, e.message, crash_signal=getattr(e, "signal_name", None))
    try:
        speeds = ", ".join(f"{'pp' if r['n_prompt'] else 'tg'} {r['avg_ts']:.0f} tok/s" for r in json_array(out))
    except (ValueError, KeyError, TypeError):
        return SmokeRun(qtype, "llama-bench", False, "llama-bench printed no results")
    return SmokeRun(qtype, "llama-bench", True, speeds)


def smoke_test(tc: Toolchain, *, threads: int | None = None, types: tuple[str, ...] = SMOKE_TYPES,
               device: str = "cpu") -> SmokeReport:
    """Make the tiny model, quantize it to ``types``, and run each through both paths on ``device`` (resolved)."""
    threads = threads or system.default_threads()
    runs: list[SmokeRun] = []
    outs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="edgeq-smoke-") as tmp:
        f32 = write_tiny_model(Path(tmp) / "smoke-F32.gguf", tiny_weights())
        for qtype in types:
            try:
                path = quantize(tc, f32, Path(tmp) / f"smoke-{qtype}.gguf", parse_quant(qtype), threads=threads)
                twin = write_tiny_model(Path(tmp) / f"smoke-{qtype}-as-F32.gguf", dequantized(path))
            except EdgeqError as e:  # llama-quantize failed or crashed: that type cannot be tested
                runs.append(SmokeRun(qtype, "llama-quantize", False, e.message,
                                     crash_signal=getattr(e, "signal_name", None)))
                continue
            run, out = _ours(qtype, path, twin, threads, device)
            runs += [run, _tool(qtype, path, tc, threads, device)]
            outs += [out] if out else []
    first = next(iter(outs), None)
    cpu = None
    if first is not None:
        built = cpu_variants(tc)
        info = str(first["system_info"])
        cpu = CpuPaths(variant=first.get("cpu_variant"), built=built,  # type: ignore[arg-type]
                       expected=config.cpu_variant() or (expected_level(built, system.cpu_flags()) if built else None),
                       features=parse_features(info), system_info=info)
    return SmokeReport(ok=all(r.ok for r in runs), runs=runs, cpu=cpu, rpc=bool(first and first.get("rpc")))
