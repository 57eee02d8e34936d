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


def reference_read(path: Path) -> dict:
    """What `inspect` showed when it used gguf-py's GGUFReader: the fast reader must agree with it exactly."""
    from collections import Counter

    from gguf import GGUFReader

    from edgeq.sources.gguf import file_type_name

    reader = GGUFReader(path, "r")

    def value(f):
        v = f.contents()
        return f"[{len(v)} items]" if isinstance(v, list) and len(v) > 16 else v

    skip = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.scores",
            "tokenizer.chat_template", "GGUF.")
    meta = {k: value(f) for k, f in reader.fields.items() if not k.startswith(skip)}
    types: dict[str, list[int]] = {}
    counts: Counter[str] = Counter()
    for t in reader.tensors:
        agg = types.setdefault(t.tensor_type.name, [0, 0])
        agg[0] += int(t.n_elements)
        agg[1] += int(t.n_bytes)
        counts[t.tensor_type.name] += 1
    n_params, n_bytes = sum(v[0] for v in types.values()), sum(v[1] for v in types.values())
    tied = not any(t.name == "output.weight" for t in reader.tensors)
    per_token = sum(int(t.n_bytes) // (int(t.n_elements) // int(t.shape[0]))  # one row of n_elements / row length
                    if t.name == "token_embd.weight" and not tied else int(t.n_bytes) for t in reader.tensors)
    arch = meta.get("general.architecture")
    return {"path": str(path), "file_size_bytes": path.stat().st_size, "architecture": arch,
            "name": meta.get("general.name"), "parameters": n_params,
            "bits_per_weight": round(8 * n_bytes / n_params, 3), "file_type": file_type_name(meta.get("general.file_type")),
            "context_length": meta.get(f"{arch}.context_length"), "embedding_length": meta.get(f"{arch}.embedding_length"),
            "block_count": meta.get(f"{arch}.block_count"), "tokenizer_model": meta.get("tokenizer.ggml.model"),
            "add_bos_token": meta.get("tokenizer.ggml.add_bos_token"), "tensor_count": len(reader.tensors),
            "tensor_types": {k: {"tensors": counts[k], "parameters": v[0], "bytes": v[1]}
                             for k, v in sorted(types.items(), key=lambda kv: -kv[1][0])},
            "metadata": meta, "bytes_per_token": per_token, "embedding": _head(meta)}


def _head(meta: dict) -> dict | None:
    """A sentence-embedding model's head, from gguf-py's metadata (edgeq's rule applied to the other reader)."""
    from dataclasses import asdict

    from edgeq.sources.sentence import gguf_head

    head = gguf_head(meta)
    return asdict(head) if head else None


def test_fast_reader_agrees_with_gguf_readers_summary(tmp_path):
    from dataclasses import asdict

    tokens = [f"tok{i}" for i in range(3000)]  # long arrays are skipped by the fast reader, not read
    files = [write_gguf(tmp_path / "a.gguf"),
             write_small_gguf(tmp_path / "b.gguf", name="vocab", add_bos=True, tokens=tokens, file_type=7)]
    for f in files:
        assert asdict(read(f)) == reference_read(f)
        assert list(read(f).metadata) == list(reference_read(f)["metadata"])  # same keys, same order


@pytest.mark.slow
def test_fast_reader_agrees_on_every_converted_type(embedded_outputs):
    from dataclasses import asdict

    for f in embedded_outputs:
        assert asdict(read(f)) == reference_read(f), f.name


def test_tensor_arrays_give_what_gguf_pys_reader_gives(tmp_path):
    import gguf
    import numpy as np
    from gguf.quants import quantize

    from edgeq.sources.gguf_header import tensor_arrays

    rng = np.random.default_rng(0)
    path = tmp_path / "t.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(3000)])  # the part gguf-py parses slowly
    w.add_tensor("a.weight", rng.standard_normal((3, 64)).astype(np.float16))
    w.add_tensor("b.weight", rng.standard_normal((2, 4, 32)).astype(np.float32))
    q = quantize(rng.standard_normal((5, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("c.weight", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ours = tensor_arrays(path)
    theirs = {t.name: t for t in gguf.GGUFReader(path).tensors}
    assert set(ours) == set(theirs)
    for name, (entry, data) in ours.items():
        assert entry.type == theirs[name].tensor_type.name
        assert data.dtype == theirs[name].data.dtype and data.shape == theirs[name].data.shape, name
        assert np.array_equal(data, theirs[name].data), name
