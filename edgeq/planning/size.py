"""File size and bits per weight of a quant, tensor by tensor, as llama.cpp would write it.

``tensor_types`` replays vendor/llama.cpp/src/llama-quant.cpp (``llama_tensor_get_type``
and ``tensor_type_fallback``) for dense models: which tensors stay F32, the Q6_K that
Q4_K_M / Q5_K_M give to output and to some layers' attn_v / ffn_down, the Q8_0 output
when a row is not a multiple of 256, and the legacy-type fallback of K-quants on such rows.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..quants import FALLBACK, QUANT_TYPES, parse_quant
from ..sources.gguf_header import tensor_table_bytes
from .spec import ModelSpec, TensorSpec

FLOAT_TYPES = ("F32", "F16", "BF16")
# The type most weights of each mix get: from the one quant table.
DEFAULT_TYPE = {q.name: q.base for q in QUANT_TYPES.values() if not q.float_type}
_IQ_LOW = {"IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"}
# Substrings of tensors llama-quantize never quantizes (tensor_allows_quantization), dense models.
_KEEP = ("_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "per_layer_model_proj", "ssm_conv1d",
         "shortconv.conv.weight", "attn_rel_b.weight", "time_mix_", "position_embd", "token_types")


def block_and_bytes(ggml_type: str) -> tuple[int, int]:
    """(weights per block, bytes per block) of a ggml type, from gguf-py's table."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType[ggml_type]]


def tensor_bytes(shape: list[int], ggml_type: str) -> int:
    block, size = block_and_bytes(ggml_type)
    n = 1
    for d in shape[1:]:
        n *= d
    return shape[0] // block * size * n


def category(name: str) -> str:
    """tensor_get_category: broad roles the mixes key on."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, cat in (("attn_qkv.weight", "attn_qkv"), ("attn_kv_b.weight", "attn_kv_b"), ("attn_v.weight", "attn_v"),
                     ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                     ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if key in name:
            return cat
    return "other"


def allows_quantization(t: TensorSpec) -> bool:
    return len(t.shape) >= 2 and t.name.endswith("weight") and not any(k in t.name for k in _KEEP)


def _more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


@dataclass
class _State:
    n_attn_v: int
    n_layer: int
    n_gqa: int
    tied: bool
    big70b: bool
    n_expert: int = 1
    falcon: bool = False
    i_attn_v: int = 0
    i_ffn_down: int = 0
    i_ffn_gate: int = 0
    i_ffn_up: int = 0


def _mix(st: _State, new: str, ncols: int, ftype: str, cat: str, layer: int) -> str:  # noqa: C901 - mirrors llama-quant.cpp
    """llama_tensor_get_type_impl without an imatrix (``layer``: the tensor's block, from its name)."""
    moe8 = st.n_expert == 8
    if cat == "output" or (st.tied and cat == "token_embd"):
        if st.falcon or ncols % block_and_bytes(new)[0] != 0:
            return "Q8_0"
        if ftype in _IQ_LOW | {"IQ3_XXS"}:
            return "Q5_K"
        return new if new == "Q8_0" else "Q6_K"
    if cat == "token_embd":
        return {"IQ2_XXS": "Q2_K", "IQ2_XS": "Q2_K", "IQ1_S": "Q2_K", "IQ1_M": "Q2_K", "IQ2_S": "IQ3_S",
                "IQ2_M": "IQ3_S", "IQ3_XXS": "IQ3_S", "TQ1_0": "Q4_K", "TQ2_0": "Q4_K"}.get(ftype, new)
    attn_v = cat in ("attn_v", "attn_qkv", "attn_kv_b")
    if ftype in _IQ_LOW:
        if attn_v:
            new = "Q4_K" if st.n_gqa >= 4 or st.n_expert >= 4 else ("IQ3_S" if ftype in ("IQ2_S", "IQ2_M") else "Q2_K")
            st.i_attn_v += 1
        elif moe8 and cat == "attn_k":
            new = "Q4_K"
        elif cat == "ffn_down":
            if st.i_ffn_down < st.n_layer // 8:
                new = "IQ3_S" if ftype in ("IQ2_S", "IQ2_M") else "Q2_K"
            st.i_ffn_down += 1
        elif cat == "attn_output":
            new = "Q5_K" if moe8 else {"IQ1_S": "IQ2_XXS", "IQ1_M": "IQ2_XXS", "IQ2_S": "IQ3_S",
                                       "IQ2_M": "IQ3_S"}.get(ftype, new)
        return new
    if attn_v:
        i, n, g = st.i_attn_v, st.n_attn_v, st.n_gqa
        if ftype == "Q2_K":
            new = "Q4_K" if g >= 4 else "Q3_K"
        elif ftype == "Q2_K_S" and g >= 4:
            new = "Q4_K"
        elif ftype == "IQ3_XXS":
            new = "Q4_K" if g >= 4 else "IQ3_S"
        elif ftype in ("IQ3_XS", "IQ3_S") and g >= 4:
            new = "Q4_K"
        elif ftype == "IQ3_M":
            new = "Q4_K"
        elif ftype == "Q3_K_M":
            new = "Q5_K" if i < 2 else "Q4_K"
        elif ftype == "Q3_K_L":
            new = "Q5_K"
        elif ftype in ("IQ4_NL", "IQ4_XS") and g >= 4:
            new = "Q5_K"
        elif ftype in ("Q4_K_M", "Q5_K_M") and _more_bits(i, n):
            new = "Q6_K"
        elif ftype == "Q4_K_S" and i < 4:
            new = "Q5_K"
        if st.big70b and new in ("Q3_K", "Q4_K"):
            new = "Q5_K"
        if moe8:  # llama.cpp: "for the 8-expert model, bumping this to Q8_0 trades just ~128MB"
            new = "Q8_0"
        st.i_attn_v += 1
    elif cat == "attn_k" and moe8:
        new = "Q8_0"
    elif cat in ("attn_k", "attn_q"):
        new = {"IQ3_XS": "IQ3_XXS", "IQ3_XXS": "IQ2_S"}.get(ftype, new)
    elif cat == "ffn_down":
        # Dense models count ffn_down tensors; MoE ones read the layer from the name (experts are not in order).
        i, n = (layer if st.n_expert > 1 else st.i_ffn_down), st.n_layer
        if ftype == "Q2_K":
            new = "Q3_K"
        elif ftype == "Q2_K_S":
            new = "Q4_K" if i < n // 8 else new
        elif ftype == "IQ3_XXS":
            new = "Q4_K" if i < n // 8 else "Q3_K"
        elif ftype == "Q3_K_M":
            new = "Q5_K" if i < n // 16 else ("Q4_K" if not st.falcon or _more_bits(i, n) else "Q3_K")
        elif ftype == "IQ3_M" and (i < n // 8 or (moe8 and _more_bits(i, n))):
            new = "Q4_K"
        elif ftype == "Q3_K_L":
            new = "Q4_K" if st.falcon else "Q5_K"
        elif ftype == "Q4_K_M" and st.falcon:
            new = "Q6_K" if i < n // 16 else ("Q5_K" if _more_bits(i, n) else "Q4_K")
        elif ftype == "Q4_K_M":
            new = "Q6_K" if _more_bits(i, n) else new
        elif i < n // 8 and ftype in ("IQ4_NL", "IQ4_XS"):
            new = "Q5_K"
        elif ftype == "Q5_K_M" and _more_bits(i, n):
            new = "Q6_K"
        elif ftype == "Q4_K_S" and not st.falcon and i < n // 8:
            new = "Q5_K"
        st.i_ffn_down += 1
    elif cat == "attn_output" and st.falcon:
        new = "Q4_K" if ftype == "Q3_K_L" else new
    elif cat == "attn_output" and moe8:
        new = "Q5_K" if ftype in ("Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M",
                                  "IQ3_S", "IQ3_M", "IQ4_XS") else new
    elif cat == "attn_output":
        new = {"Q2_K": "Q3_K", "IQ3_XXS": "IQ3_S", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K", "IQ3_M": "Q4_K"}.get(ftype, new)
    elif cat == "attn_qkv":
        new = {"Q3_K_M": "Q4_K", "Q3_K_L": "Q4_K", "IQ3_M": "Q4_K", "Q4_K_M": "Q5_K", "Q5_K_M": "Q6_K"}.get(ftype, new)
    elif cat in ("ffn_gate", "ffn_up"):
        i = layer if st.n_expert > 1 else (st.i_ffn_gate if cat == "ffn_gate" else st.i_ffn_up)
        if ftype == "IQ3_XS" and st.n_layer // 8 <= i < 7 * st.n_layer // 8:
            new = "IQ3_XXS"
        if cat == "ffn_gate":
            st.i_ffn_gate += 1
        else:
            st.i_ffn_up += 1
    return new


def fallback_type(new: str, ncols: int) -> str:
    """The type llama-quantize writes for `new` asked of a tensor with rows of `ncols` (its fallback, or F16)."""
    if ncols % block_and_bytes(new)[0] == 0:
        return new
    out = FALLBACK.get(new, new)
    return out if ncols % block_and_bytes(out)[0] == 0 else "F16"


def _layer(name: str) -> int:
    parts = name.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "blk" and parts[1].isdigit() else -1


def tensor_types(spec: ModelSpec, quant: str) -> list[str]:
    """The ggml type of each of ``spec.tensors`` in a ``quant`` file made by edgeq convert (or, for a tuned
    file's label, as its recipe has them)."""
    if quant in spec.recipes:
        return list(spec.recipes[quant])
    q = parse_quant(quant).name
    if q in FLOAT_TYPES:  # written by convert_hf_to_gguf.py: 1-D tensors and norms stay F32
        return [q if allows_quantization(t) else "F32" for t in spec.tensors]
    # llama-quantize walks tensors by layer number, then name (weight_name_comparer): the counters follow.
    order = sorted(range(len(spec.tensors)), key=lambda i: (_layer(spec.tensors[i].name), spec.tensors[i].name))
    cats = {i: category(spec.tensors[i].name) for i in order}
    st = _State(n_attn_v=sum(c in ("attn_v", "attn_qkv", "attn_kv_b") for c in cats.values()),
                n_layer=spec.n_layer, n_gqa=spec.n_head // max(1, spec.n_head_kv),
                tied=not any(c == "output" for c in cats.values()),
                big70b=spec.arch == "llama" and spec.n_layer == 80, n_expert=max(1, spec.n_expert),
                falcon=spec.arch == "falcon")
    out = [""] * len(spec.tensors)
    for i in order:
        t = spec.tensors[i]
        if not allows_quantization(t):
            out[i] = t.base_type
            continue
        out[i] = fallback_type(_mix(st, DEFAULT_TYPE[q], t.shape[0], q, cats[i], _layer(t.name)), t.shape[0])
    return out


@dataclass
class SizePrediction:
    quant: str
    file_size_bytes: int
    tensor_bytes: int
    parameters: int
    bits_per_weight: float  # tensor bytes × 8 ÷ parameters, as sources.gguf reports it
    type_shares: dict[str, float] = field(default_factory=dict)  # ggml type -> share of parameters
    fallback_share: float = 0.0  # of parameters in a legacy type where a K-type was wanted
    output_type: str | None = None
    token_embd_type: str | None = None


def predict_size(spec: ModelSpec, quant: str) -> SizePrediction:
    """Bytes of the GGUF file: header (metadata + tensor table) and each tensor padded to the alignment."""
    types = tensor_types(spec, quant)
    block = 0 if quant in spec.recipes else parse_quant(quant).block_size  # a recipe asked for no fallback
    align = spec.alignment
    data = 0
    params: Counter[str] = Counter()
    nbytes = 0
    for t, ty in zip(spec.tensors, types):
        b = tensor_bytes(t.shape, ty)
        nbytes += b
        data += -(-b // align) * align
        params[ty] += t.n_elements
    table = tensor_table_bytes(spec.tensors)
    header = -(-(spec.recipe_metadata_bytes.get(quant, spec.metadata_bytes) + table) // align) * align
    n = sum(params.values())
    by_name = dict(zip((t.name for t in spec.tensors), types))
    legacy = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL"}
    fb = sum(p for ty, p in params.items() if ty in legacy) / n if block == 256 and n else 0.0
    return SizePrediction(
        quant=quant if quant in spec.recipes else parse_quant(quant).name, file_size_bytes=header + data, tensor_bytes=nbytes, parameters=n,
        bits_per_weight=round(8 * nbytes / n, 3) if n else 0.0,
        type_shares={k: round(v / n, 4) for k, v in params.most_common()},
        fallback_share=round(fb, 4), output_type=by_name.get("output.weight"),
        token_embd_type=by_name.get("token_embd.weight"))
