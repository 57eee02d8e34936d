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
