import pytest

from edgeq.errors import UsageError
from edgeq.quants import ALIASES, FALLBACK, LEGACY_TYPES, QUANT_TYPES, parse_quant, parse_quants


def test_names_are_case_insensitive_and_aliases_resolve():
    assert parse_quant("q4_k_m").name == "Q4_K_M"
    assert parse_quant("Q4_K").name == "Q4_K_M"
    assert parse_quant("q8-0").name == "Q8_0"


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UsageError) as e:
        parse_quant("Q9_X")
    assert "unknown quantization type 'Q9_X'" in str(e.value)
    assert "Q4_K_M" in str(e.value) and "IQ4_NL" in str(e.value)


def test_parse_quants_splits_commas_and_drops_repeats():
    got = [q.name for q in parse_quants(["Q8_0,Q4_K_M", "q8_0", "Q6_K"])]
    assert got == ["Q8_0", "Q4_K_M", "Q6_K"]


def test_table_matches_the_vendored_quantizer(tmp_path):
    """Every name we accept is one llama-quantize accepts (read from its source)."""
    from edgeq import config

    src = (config.llama_dir() / "tools" / "quantize" / "quantize.cpp").read_text()
    for name in list(QUANT_TYPES) + list(ALIASES):
        assert f'"{name}"' in src, name


def test_k_quants_have_legacy_fallbacks():
    for q in QUANT_TYPES.values():
        if q.block_size == 256 and not q.float_type:
            assert FALLBACK.get(q.base) in LEGACY_TYPES | {"Q4_0"}, q.name


def test_bits_per_weight_agree_with_gguf_block_sizes():
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    for q in QUANT_TYPES.values():
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[q.base]]
        assert q.block_size == block, q.name
        assert q.bits_per_weight == pytest.approx(8 * type_size / block), q.name


def _default_types_in_llama_quant() -> dict[str, str]:
    """``llama_ftype_get_default_type``'s switch, parsed from the vendored llama-quant.cpp (fall-through kept)."""
    import re

    from edgeq import config

    src = (config.llama_dir() / "src" / "llama-quant.cpp").read_text()
    body = src[src.index("ggml_type llama_ftype_get_default_type("):]
    body = body[:body.index("default:")]
    out, pending = {}, []
    for ftype, ggml in re.findall(r"case LLAMA_FTYPE_(?:MOSTLY_|ALL_)(\w+):\s*(?:return GGML_TYPE_(\w+);)?", body):
        pending.append(ftype)
        if ggml:
            out.update(dict.fromkeys(pending, ggml))
            pending = []
    return out


def test_base_types_are_llama_cpps_default_types():
    """One table: each file type's base is what llama.cpp gives most weights (a llama.cpp upgrade fails here)."""
    from edgeq.planning.size import DEFAULT_TYPE

    llama = _default_types_in_llama_quant()
    assert len(llama) > 30 and llama["IQ3_XS"] == "IQ3_S" and llama["IQ2_S"] == "IQ2_XS"
    for name, q in QUANT_TYPES.items():
        assert llama[name] == q.base, f"{name}: llama.cpp {llama[name]}, edgeq {q.base}"
    assert all(DEFAULT_TYPE[n] == QUANT_TYPES[n].base for n in DEFAULT_TYPE)  # plan's sizes use the same table


def test_bits_per_weight_are_ggmls_block_sizes():
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    for q in QUANT_TYPES.values():
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[q.base]]
        assert (q.block_size, q.bits_per_weight) == (block, size * 8 / block), q.name
