"""Every bad input to `edgeq convert`: one clear line, a non-zero exit, no final-named file."""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import final_ggufs, run_main, write_minimal_checkpoint


def valid_weights(folder: Path) -> Path:
    from safetensors.numpy import save_file

    save_file({"model.embed_tokens.weight": np.zeros((8, 256), dtype=np.float32)}, str(folder / "model.safetensors"))
    return folder


class Marker:
    """A pickle that would create a file if it were ever unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


CASES = {
    "no config": (lambda d: (d.mkdir(), d)[1], "has no config.json"),
    "config not json": (lambda d: (write_minimal_checkpoint(d), (d / "config.json").write_text("{oops"), d)[2],
                        "config.json in .* is not valid JSON"),
    "unsupported arch": (lambda d: write_minimal_checkpoint(d, architectures=["MyToyForCausalLM"]),
                         "architecture 'MyToyForCausalLM' is not supported.*LlamaForCausalLM"),
    "no tokenizer": (lambda d: (write_minimal_checkpoint(d), (d / "tokenizer.json").unlink(), valid_weights(d))[2],
                     "has no tokenizer"),
    "remote code": (lambda d: write_minimal_checkpoint(d, auto_map={"AutoModel": "modeling_x.X"}),
                    "asks for custom Python code.*never runs remote code"),
    "no weights": (lambda d: write_minimal_checkpoint(d), "has no weights"),
    "corrupt safetensors": (lambda d: (write_minimal_checkpoint(d), (d / "model.safetensors").write_bytes(b"\xff" * 64), d)[2],
                            "model.safetensors is not a valid safetensors file.*Re-download"),
    "truncated safetensors": (lambda d: (valid_weights(write_minimal_checkpoint(d)),
                                         _truncate(d / "model.safetensors"), d)[2],
                              "lies outside the file.*truncated"),
}


def _truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 100])


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_checkpoint(case, tmp_path, capsys):
    make, message = CASES[case]
    src = make(tmp_path / "src")
    out = tmp_path / "out"
    code, err, stdout = run_main(["convert", str(src), "--q8", "-o", str(out)], capsys)
    assert code == 1, err
    assert err.startswith("Error: ") and len(err.splitlines()) == 1, err
    assert __import__("re").search(message, err), err
    assert final_ggufs(out) == [] and stdout == ""


def test_pickle_is_refused_and_never_loaded(tmp_path, capsys):
    src = write_minimal_checkpoint(tmp_path / "src")
    marker = tmp_path / "pwned"
    (src / "pytorch_model.bin").write_bytes(pickle.dumps(Marker(str(marker))))
    code, err, _ = run_main(["convert", str(src), "--q8", "-o", str(tmp_path / "out")], capsys)
    assert code == 1 and "only pickled weights" in err and "--allow-pickle" in err
    assert not marker.exists()


@pytest.mark.parametrize("args,message", [
    (["--quant", "Q9_X"], "unknown quantization type 'Q9_X'.*Valid types: .*Q4_K_M"),
    (["--quant", "IQ2_XXS"], "IQ2_XXS needs an importance matrix"),
    (["--outtype", "f8"], "Invalid value for '--outtype'"),
    (["--threads", "0"], "Invalid value for '--threads'"),
])
def test_bad_options_are_usage_errors(args, message, tmp_path, capsys, tiny_source):
    code, err, _ = run_main(["convert", str(tiny_source), "-o", str(tmp_path / "out"), *args], capsys)
    assert code == 2, err
    assert __import__("re").search(message, err), err
    assert final_ggufs(tmp_path / "out") == []


def test_disk_full_is_refused_early_with_numbers(tmp_path, capsys, monkeypatch, tiny_source):
    import edgeq.system

    monkeypatch.setattr(edgeq.system, "free_disk_bytes", lambda p: 10 * 1024**2)
    code, err, _ = run_main(["convert", str(tiny_source), "--q8", "-o", str(tmp_path / "out")], capsys)
    assert code == 1
    assert "not enough disk" in err and "GiB are free" in err and "0.01 GiB" in err
    assert final_ggufs(tmp_path / "out") == []


def test_json_errors_are_json(tmp_path, capsys):
    code, _, out = run_main(["convert", str(tmp_path / "nowhere"), "--json"], capsys)
    data = json.loads(out)
    assert code == 2 and data["error"] == "usage" and data["exit_code"] == 2


@pytest.fixture
def tiny_source(tmp_path):
    return valid_weights(write_minimal_checkpoint(tmp_path / "tiny"))
