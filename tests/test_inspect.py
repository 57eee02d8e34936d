import json
from pathlib import Path

import pytest
from conftest import write_small_gguf

from edgeq.cli import main
from edgeq.errors import GGUFError
from edgeq.sources.gguf import read


def write_gguf(path: Path) -> Path:
    return write_small_gguf(path, name="unit", add_bos=False)


@pytest.fixture
def gguf_file(tmp_path):
    return write_gguf(tmp_path / "unit.gguf")


def test_inspect_reads_header_and_tensor_types(gguf_file):
    info = read(gguf_file)
    assert info.architecture == "llama" and info.name == "unit"
    assert info.context_length == 128 and info.block_count == 1
    assert info.tokenizer_model == "gpt2" and info.add_bos_token is False
    assert info.parameters == 64 + 64 * 64
    assert set(info.tensor_types) == {"F32", "Q8_0"}
    # 64 F32 weights at 32 bits + 4096 Q8_0 at 8.5 bits
    assert info.bits_per_weight == pytest.approx((64 * 32 + 4096 * 8.5) / 4160, abs=1e-3)


def test_inspect_json(gguf_file, capsys):
    main(["inspect", str(gguf_file), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["tensor_types"]["Q8_0"]["tensors"] == 1


@pytest.mark.parametrize("cut", [3, 10, 200, -100])
def test_truncated_gguf_is_one_clear_error(gguf_file, tmp_path, cut, capsys):
    data = gguf_file.read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(data[:cut])
    with pytest.raises(SystemExit) as e:
        main(["inspect", str(bad)])
    err = capsys.readouterr().err
    assert e.value.code == 1
    assert err.startswith("Error: ") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_non_gguf_file_names_the_fix(tmp_path):
    p = tmp_path / "model.safetensors"
    p.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(GGUFError, match="not a GGUF file.*edgeq convert"):
        read(p)


def test_missing_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["inspect", str(tmp_path / "nope.gguf"), "--json"])
    assert e.value.code == 1
    assert json.loads(capsys.readouterr().out)["error"] == "gguf"
