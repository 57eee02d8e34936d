"""Check a Hugging Face checkpoint folder before anything runs on it.

Every problem found here is cheap to find and costly to discover half-way
through a conversion, and some (pickles, remote code) are unsafe to meet at all.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SourceError, UnsafeSourceError
from ..files import missing_file

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer.tiktoken", "vocab.json", "tekken.json")
_TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "added_tokens.json")
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl")
# A safetensors header is JSON; anything past this is not a real checkpoint.
MAX_HEADER_BYTES = 100 * 1024 * 1024
# Bytes per element of the safetensors dtypes; a tensor of another dtype is only range-checked.
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass
class Checkpoint:
    path: Path
    architecture: str
    config: dict[str, Any]
    weight_files: list[Path] = field(default_factory=list)
    pickled: bool = False
    parameters: int = 0
    tensors: int = 0


def read_safetensors_header(path: Path, *, check_data: bool = True) -> dict[str, dict[str, Any]]:
    """The tensors of a .safetensors file's JSON header (``__metadata__`` left out), weights unread.

    ``check_data`` also checks each entry's dtype, shape and offsets against the
    file's size; ``plan`` turns it off, as it may hold the header alone.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ValueError("file is shorter than its 8-byte header length")
            (n,) = struct.unpack("<Q", raw)
            if n == 0 or n > MAX_HEADER_BYTES:
                raise ValueError(f"header length {n} is impossible")
            header = f.read(n)
            if len(header) != n:
                raise ValueError("file ends inside its header")
        data = json.loads(header)
        if not isinstance(data, dict):
            raise ValueError("header is not a JSON object")
        data.pop("__metadata__", None)
        size = path.stat().st_size - 8 - n
        for name, t in data.items():
            if check_data:
                _check_tensor_entry(name, t, size)
            elif not isinstance(t, dict) or not isinstance(t.get("shape"), list):
                raise ValueError(f"tensor {name!r} has no shape")
        if check_data:
            _check_no_overlap(data)
        return data
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, OSError) as e:
        raise SourceError(f"{path.name} is not a valid safetensors file: {e}.",
                          hint="Re-download it (delete the file first, or use `edgeq download --force`).") from e


def _check_tensor_entry(name: str, t: object, data_size: int) -> None:
    """One header entry: a dtype, a shape of non-negative ints, and offsets inside the data."""
    if not isinstance(t, dict):
        raise ValueError(f"entry {name!r} is not an object")
    shape, offsets, dtype = t.get("shape"), t.get("data_offsets"), t.get("dtype")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ValueError(f"tensor {name!r} has no valid shape")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise ValueError(f"tensor {name!r} has no valid data_offsets")
    start, end = offsets
    if not 0 <= start <= end <= data_size:
        raise ValueError(f"tensor {name} lies outside the file (truncated download?)")
    if not isinstance(dtype, str):
        raise ValueError(f"tensor {name!r} has no dtype")
    if dtype in DTYPE_BYTES and end - start != math.prod(shape) * DTYPE_BYTES[dtype]:
        raise ValueError(f"tensor {name!r} holds {end - start} bytes, not the {math.prod(shape)} {dtype} values of its shape")


def _check_no_overlap(entries: dict[str, Any]) -> None:
    """No two tensors may share bytes: a header whose offsets overlap describes no real file."""
    spans = sorted((t["data_offsets"][0], t["data_offsets"][1], name) for name, t in entries.items()
                   if t["data_offsets"][1] > t["data_offsets"][0])
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            raise ValueError(f"tensors {a!r} and {b!r} overlap in the file")


def _refuse_special_files(folder: Path) -> None:
    """A FIFO, socket or device where a file should be would block or mislead every reader: one line instead."""
    for p in sorted(folder.iterdir()):
        if not (p.is_file() or p.is_dir()):  # a dangling symlink too
            raise SourceError(f"{p} {missing_file(p, noun='regular file')}.",
                              hint="Replace it with the real file (re-download the checkpoint).")


def _positive_int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _layer_shapes(cfg: dict[str, Any]) -> dict[str, list[int]] | None:
    """What a llama-family layer's tensors must be, from config.json (None: the config lacks usable sizes)."""
    hidden, heads, ffn = (_positive_int(cfg.get(k)) for k in ("hidden_size", "num_attention_heads", "intermediate_size"))
    if hidden is None or heads is None or ffn is None:
        return None
    kv = _positive_int(cfg.get("num_key_value_heads")) or heads
    head_dim = _positive_int(cfg.get("head_dim")) or hidden // heads
    return {"self_attn.q_proj.weight": [heads * head_dim, hidden], "self_attn.k_proj.weight": [kv * head_dim, hidden],
            "self_attn.v_proj.weight": [kv * head_dim, hidden], "self_attn.o_proj.weight": [hidden, heads * head_dim],
            "mlp.gate_proj.weight": [ffn, hidden], "mlp.up_proj.weight": [ffn, hidden],
            "mlp.down_proj.weight": [hidden, ffn]}


# Dense llama-style models: every layer has every attention and MLP tensor, of the shapes the config implies.
# Others (mixture-of-experts with dense first layers, MLA attention, hybrid SSM layers, next-token-prediction
# layers past num_hidden_layers) break those rules legitimately, so they are not checked here.
CHECKED_ARCHITECTURES = frozenset({
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "GemmaForCausalLM",
    "Gemma2ForCausalLM", "Gemma3ForCausalLM", "OlmoForCausalLM", "Olmo2ForCausalLM", "GraniteForCausalLM",
    "SmolLM3ForCausalLM", "InternLM3ForCausalLM", "ExaoneForCausalLM"})


def check_against_config(shapes: dict[str, list[int]], cfg: dict[str, Any]) -> None:
    """The tensors the converter will need, present and of the shapes config.json implies.

    Checked for dense llama-style architectures (``CHECKED_ARCHITECTURES``), by their
    names (``model.layers.N.self_attn.q_proj.weight`` …); a tensor kind layer 0 does not
    have (fused QKV) is not asked for.  Without this a wrong shape converted "fine" and
    only failed to load later, with a message about the context size.
    """
    archs = cfg.get("architectures")
    if not (isinstance(archs, list) and archs and archs[0] in CHECKED_ARCHITECTURES):
        return
    want = _layer_shapes(cfg)
    n_layer = _positive_int(cfg.get("num_hidden_layers"))
    if want is None or n_layer is None:
        return
    prefix = "model.layers."
    kinds = [k for k in want if f"{prefix}0.{k}" in shapes]
    vocab, hidden = cfg.get("vocab_size"), cfg.get("hidden_size")
    emb = shapes.get("model.embed_tokens.weight")
    if emb is not None and isinstance(vocab, int) and emb != [vocab, hidden]:
        raise SourceError(f"tensor model.embed_tokens.weight has shape {emb}, but config.json implies "
                          f"[{vocab}, {hidden}] (vocab_size, hidden_size).", hint=_MISMATCH_HINT)
    for i in range(n_layer):
        for k in kinds:
            name = f"{prefix}{i}.{k}"
            got = shapes.get(name)
            if got is None:
                raise SourceError(f"tensor {name} is missing: config.json says {n_layer} layers.", hint=_MISMATCH_HINT)
            if got != want[k]:
                raise SourceError(f"tensor {name} has shape {got}, but config.json implies {want[k]}.",
                                  hint=_MISMATCH_HINT)
    extra = sorted({int(k[len(prefix):].split(".")[0]) for k in shapes
                    if k.startswith(prefix) and k[len(prefix):].split(".")[0].isdigit()} - set(range(n_layer)))
    if extra:
        raise SourceError(f"the weights have layer {extra[0]}, but config.json says {n_layer} layers.",
                          hint=_MISMATCH_HINT)


_MISMATCH_HINT = "The weights and config.json disagree: re-download the checkpoint, or fix config.json."


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise SourceError(f"{path.name} in {path.parent} is not valid JSON ({e}).",
                          hint="Re-download the checkpoint.") from e
    if not isinstance(data, dict):
        raise SourceError(f"{path.name} in {path.parent} is not a JSON object.", hint="Re-download the checkpoint.")
    return data


def read_config(folder: Path) -> dict[str, Any]:
    """A checkpoint's config.json, or {} when it has none (the checks that need one say so)."""
    return _load_json(folder / "config.json") if (folder / "config.json").is_file() else {}


def architecture(cfg: dict[str, Any]) -> str:
    """The HF class a config names first (``architectures[0]``), or ''."""
    archs = cfg.get("architectures") or []
    return str(archs[0]) if isinstance(archs, list) and archs else ""


def unsupported(arch: str, supported: frozenset[str]) -> SourceError:
    """One line for an architecture the converter has no class for: the nearest names it has, the ones it
    supports, and what still works (transformers runs it in bench and eval)."""
    import difflib

    causal = sorted(a for a in supported if a.endswith("ForCausalLM"))
    near = difflib.get_close_matches(arch, causal, n=2, cutoff=0.6)
    closest = f" The nearest name it supports is {' or '.join(near)} (a different model unless the config says so)." if near else ""
    return SourceError(f"architecture {arch or '(none in config.json)'!r} is not supported by the vendored llama.cpp "
                       f"converter, so it cannot become a GGUF here.{closest}",
                       hint=f"edgeq bench and edgeq eval still run it through transformers (fp32, bf16, bitsandbytes). "
                            f"Supported causal LMs: {', '.join(causal)}.")


TESTED_FILE = "tested-architectures.json"  # written by benchmarks/architectures.py from the matrix it runs


def tested_architectures() -> dict[str, str]:
    """HF classes edgeq's architecture matrix has proven (logits, quants, plan, CLI) → the matrix row's name."""
    from importlib import resources

    raw = json.loads(resources.files("edgeq.data").joinpath(TESTED_FILE).read_text(encoding="utf-8"))
    return dict(raw["passed"])


def check(folder: Path, *, supported: frozenset[str], allow_pickle: bool = False) -> Checkpoint:
    """Validate a checkpoint folder; raise a one-line error for the first problem found."""
    if not folder.is_dir():
        raise SourceError(f"{folder} is not a folder.", hint="Pass a Hugging Face repo id or a checkpoint folder.")
    _refuse_special_files(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise SourceError(f"{folder} has no config.json, so it is not a Hugging Face checkpoint.",
                          hint="Pass the folder that holds config.json and the weights.")
    cfg = _load_json(cfg_path)
    _refuse_remote_code(folder, cfg)
    arch = architecture(cfg)
    if arch not in supported:
        raise unsupported(arch, supported)
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise SourceError(f"{folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}).",
                          hint="Download the tokenizer files too, or copy them from the base model.")
    for f in _TOKENIZER_JSON:  # the converter would die on them with a UnicodeDecodeError or a JSON traceback
        if (folder / f).is_file():
            _load_json(folder / f)
    ck = Checkpoint(folder, arch, cfg)
    safetensors = sorted(folder.glob("*.safetensors"))
    if safetensors:
        shapes: dict[str, list[int]] = {}
        for p in safetensors:
            for name, t in read_safetensors_header(p).items():
                ck.tensors += 1
                ck.parameters += math.prod(t["shape"])  # validated above
                shapes[name] = t["shape"]
        check_against_config(shapes, cfg)
        ck.weight_files = safetensors
        return ck
    pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not pickles:
        raise SourceError(f"{folder} has no weights (*.safetensors).", hint="Download the weight files too.")
    if not allow_pickle:
        raise UnsafeSourceError(
            f"{folder} has only pickled weights ({pickles[0].name}); unpickling can run arbitrary code.",
            hint="Use a safetensors version of the model, or pass --allow-pickle if you trust its author "
                 "(loaded with torch.load(weights_only=True)).")
    ck.weight_files, ck.pickled = pickles, True
    ck.parameters = sum(p.stat().st_size for p in pickles) // 2  # rough: assume 16-bit weights
    return ck


def _refuse_remote_code(folder: Path, cfg: dict[str, Any]) -> None:
    """A config with ``auto_map`` asks transformers to import Python from the repo.

    Every ``*config.json`` is read (tokenizer, processor, generation...): each is
    a door transformers' Auto classes may open.
    """
    sources = [("config.json", cfg)]
    sources += [(p.name, _load_json(p)) for p in sorted(folder.glob("*config.json"))
                if p.name != "config.json" and p.is_file()]
    for name, data in sources:
        if data.get("auto_map"):
            raise UnsafeSourceError(
                f"{name} in {folder} asks for custom Python code (auto_map), and edgeq never runs remote code.",
                hint="Use a checkpoint of an architecture transformers ships natively.")
