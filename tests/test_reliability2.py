"""Reliability, round two: concurrent runs, poisoned weights, hostile metadata, and every error one honest line.

Each test reproduces one case a stranger's hostile run found (the README's Reliability table lists them).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_checkpoint, write_minimal_checkpoint

from edgeq import manifest
from edgeq.conversion import steps
from edgeq.errors import SourceError, UsageError
from edgeq.llamacpp import find_toolchain, supported_architectures
from edgeq.sources import checkpoint

EDGEQ = str(Path(sys.executable).with_name("edgeq"))
SUPPORTED = supported_architectures(find_toolchain().llama_dir)


def edgeq(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EDGEQ, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def one_line_error(p: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """The failure contract: the exit code, one line on stderr (no traceback) naming the problem."""
    err = p.stderr.strip()
    assert p.returncode == code, (p.returncode, err[-2000:])
    assert "Traceback" not in err and len(err.splitlines()) == 1, err[-2000:]
    for n in needles:
        assert n in err, err


def one_json_error(p: subprocess.CompletedProcess[str], code: int, kind: str | None = None) -> dict[str, object]:
    assert p.returncode == code, (p.returncode, p.stderr[-2000:])
    obj = json.loads(p.stdout)  # exactly one object: json.loads refuses trailing text
    assert obj["exit_code"] == code and (kind is None or obj["error"] == kind), obj
    assert "Traceback" not in p.stderr
    return dict(obj)


def llama_layers(tmp_path: Path, **shape_overrides: list[int]) -> Path:
    """A checkpoint folder whose safetensors header holds a 2-layer llama's tensors (zeros), some reshaped."""
    from safetensors.numpy import save_file

    cfg = {"vocab_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "intermediate_size": 32, "hidden_size": 8}
    src = write_minimal_checkpoint(tmp_path / "src", **cfg)
    want = checkpoint._layer_shapes(cfg)
    assert want is not None
    tensors = {"model.embed_tokens.weight": [16, 8]}
    tensors |= {f"model.layers.{i}.{k}": v for i in range(2) for k, v in want.items()}
    tensors |= shape_overrides
    save_file({k: np.zeros(v, dtype=np.float32) for k, v in tensors.items() if v}, str(src / "model.safetensors"))
    return src


# ---- 3. tensors that contradict config.json ------------------------------------------------------

def test_tensors_that_agree_with_the_config_pass(tmp_path):
    assert checkpoint.check(llama_layers(tmp_path), supported=SUPPORTED).tensors == 15


@pytest.mark.parametrize("override,message", [
    ({"model.layers.1.self_attn.q_proj.weight": [8, 6]}, "has shape [8, 6], but config.json implies [8, 8]"),
    ({"model.layers.1.mlp.down_proj.weight": []}, "model.layers.1.mlp.down_proj.weight is missing"),
    ({"model.layers.2.self_attn.q_proj.weight": [8, 8]}, "the weights have layer 2, but config.json says 2 layers"),
    ({"model.embed_tokens.weight": [15, 8]}, "implies [16, 8] (vocab_size, hidden_size)"),
])
def test_tensors_that_contradict_the_config_are_refused_before_converting(override, message, tmp_path):
    src = llama_layers(tmp_path, **override)
    with pytest.raises(SourceError, match="config.json") as e:
        checkpoint.check(src, supported=SUPPORTED)
    assert message in str(e.value) and "re-download" in (e.value.hint or "")


def test_architectures_that_break_the_dense_rules_legitimately_are_not_refused(tmp_path):
    """DeepSeek-style: dense layer 0, expert layers after it, MLA attention shapes, a next-token layer past
    num_hidden_layers.  The converter supports them; the pre-flight must not call them broken."""
    src = llama_layers(tmp_path, **{"model.layers.1.mlp.gate_proj.weight": [], "model.layers.1.mlp.up_proj.weight": [],
                                    "model.layers.1.mlp.down_proj.weight": [],
                                    "model.layers.0.self_attn.q_proj.weight": [12, 8],
                                    "model.layers.2.self_attn.q_proj.weight": [12, 8]})
    cfg = json.loads((src / "config.json").read_text())
    for arch in ("DeepseekV3ForCausalLM", "Glm4MoeForCausalLM"):
        (src / "config.json").write_text(json.dumps({**cfg, "architectures": [arch], "first_k_dense_replace": 1}))
        if arch in SUPPORTED:
            assert checkpoint.check(src, supported=SUPPORTED).tensors > 0


def test_bench_and_eval_give_a_second_model_of_the_same_name_its_own_folder(tmp_path):
    out = tmp_path / "X"
    out.mkdir()
    manifest.save(out, manifest.Manifest(source={"kind": "hub", "repo_id": "Qwen/X"}, llama_cpp="x", options={}))
    assert steps.own_folder(out, {"kind": "hub", "repo_id": "Qwen/X"}) == out
    other = steps.own_folder(out, {"kind": "hub", "repo_id": "unsloth/X"})
    assert other.parent == tmp_path and other.name.startswith("X-") and len(other.name) == 10
    assert steps.own_folder(out, {"kind": "hub", "repo_id": "unsloth/X"}) == other  # deterministic


def test_overlapping_safetensors_offsets_are_refused(tmp_path):
    src = llama_layers(tmp_path)
    f = src / "model.safetensors"
    raw = f.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    a, b = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])[:2]
    header[b]["data_offsets"] = [header[a]["data_offsets"][0], header[a]["data_offsets"][0]
                                 + header[b]["data_offsets"][1] - header[b]["data_offsets"][0]]
    new = json.dumps(header, separators=(",", ":")).encode().ljust(n)
    assert len(new) == n
    f.write_bytes(raw[:8] + new + raw[8 + n:])
    with pytest.raises(SourceError, match="overlap in the file"):
        checkpoint.check(src, supported=SUPPORTED)


# ---- 7. a FIFO where a file should be ------------------------------------------------------------

def test_a_fifo_named_like_the_weights_is_one_line_not_a_hang(tmp_path):
    src = write_minimal_checkpoint(tmp_path / "src")
    os.mkfifo(src / "model.safetensors")
    p = edgeq("convert", str(src), "-o", str(tmp_path / "out"), timeout=60)
    one_line_error(p, 1, "model.safetensors is a FIFO, not a regular file")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ---- 5. output paths that cannot be made ---------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["convert", "{ckpt}", "-o", "{afile}/sub"],
    ["bench", "{gguf}", "-o", "{afile}/b.json"],
    ["report", "{results}", "-o", "{afile}/rep"],
    ["eval", "ppl", "{gguf}", "-o", "{afile}/e.json"],
])
def test_an_output_path_under_a_file_is_one_line_and_one_json_object(args, tmp_path, embedded_outputs,
                                                                    embedded_checkpoint):
    afile = tmp_path / "afile"
    afile.write_text("x")
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"schema": "edgeq-bench/1", "environment": {}, "settings": {}, "runs": []}))
    args = [a.format(afile=afile, gguf=embedded_outputs[0], results=results, ckpt=embedded_checkpoint) for a in args]
    p = edgeq(*args)
    one_line_error(p, 2, f"{afile} is a file, not a folder")
    if args[0] != "report":  # report has no --json
        one_json_error(edgeq(*args, "--json"), 2, "usage")


# ---- 8. another model's folder -------------------------------------------------------------------

def test_a_second_model_is_not_recorded_in_another_models_folder(tmp_path):
    old = manifest.Manifest(source={"kind": "local", "path": "/models/a", "fingerprint": "1"}, llama_cpp="x",
                            options={}, files={"a-Q8_0.gguf": manifest.FileRecord("Q8_0", "s", 1, 8.5, "r", "t")})
    same = {"kind": "local", "path": "/models/a", "fingerprint": "2"}  # the same model, changed: reuse decides
    other = {"kind": "local", "path": "/models/b", "fingerprint": "3"}
    assert steps.same_model_or_refuse(tmp_path, old, same, force=False) is old
    with pytest.raises(UsageError, match="holds files converted from /models/a; converting /models/b"):
        steps.same_model_or_refuse(tmp_path, old, other, force=False)
    assert steps.same_model_or_refuse(tmp_path, old, other, force=True) is None
    hub = {"kind": "hub", "repo_id": "org/a", "path": "/cache/x", "fingerprint": "4"}
    moved = {"kind": "hub", "repo_id": "org/a", "path": "/cache/y", "fingerprint": "5"}
    hub_old = manifest.Manifest(source=hub, llama_cpp="x", options={})
    assert steps.same_model_or_refuse(tmp_path, hub_old, moved, force=False) is hub_old


# ---- 2. NaN, Inf and values too large for F16 ----------------------------------------------------

def _poisoned(tmp_path: Path, tiny_llama: Path, value: float) -> Path:
    from safetensors.numpy import load_file, save_file

    src = tmp_path / "poisoned"
    shutil.copytree(tiny_llama, src)
    weights = load_file(str(src / "model.safetensors"))
    w = weights["model.layers.0.mlp.down_proj.weight"]
    w[3, :5] = value
    save_file(weights, str(src / "model.safetensors"), metadata={"format": "pt"})
    return src


@pytest.mark.slow
@pytest.mark.parametrize("value,extra", [(float("nan"), ""), (1e6, "need --outtype bf16 or f32")])
def test_non_finite_weights_are_refused_with_the_tensors_name(value, extra, tmp_path, tiny_llama):
    src = _poisoned(tmp_path, tiny_llama, value)
    out = tmp_path / "out"
    p = edgeq("convert", str(src), "--q8", "-o", str(out))
    one_line_error(p, 1, "tensor 'blk.0.ffn_down.weight' has 5 non-finite F16 values", extra)
    assert not list(out.glob("*.gguf")) and not list(out.glob("*.incomplete"))
    if value > 1:  # finite, just too large for F16: F32 holds it
        ok = edgeq("convert", str(src), "--outtype", "f32", "--quant", "F32", "-o", str(out), "--json")
        assert ok.returncode == 0, ok.stderr[-2000:]


# ---- 1. concurrent runs into one folder ----------------------------------------------------------

@pytest.mark.slow
def test_concurrent_converts_evals_and_benches_into_one_folder_lose_nothing(tmp_path, embedded_checkpoint):
    """The issue's repro (F16 first, then two converts at once), with an eval and two benches beside them
    writing into the same model folder (and the two benches into one results file)."""
    from edgeq import config

    src = make_tiny_checkpoint(tmp_path / "tiny", embedded_checkpoint, hidden=256)
    env = {config.ENV_MODELS_DIR: str(tmp_path / "models")}
    out = tmp_path / "models" / "tiny"  # where convert, bench and eval all put this model's files by default
    first = edgeq("convert", str(src), "--quant", "F16", env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    bench_json = tmp_path / "bench.json"
    runs = {"convert-a": ["convert", str(src), "--q8", "--quant", "Q6_K", "--json"],
            "convert-b": ["convert", str(src), "--q4", "--quant", "Q5_K_M", "--json"],
            "eval": ["eval", "ppl", str(src), "--quants", "Q4_0", "--max-tokens", "1024", "-o",
                     str(tmp_path / "e.json"), "--json"],
            "bench-a": ["bench", str(src), "--quants", "Q5_0", "--hf", "", "-p", "8", "-n", "2", "-r", "1",
                        "--batch", "1", "-o", str(bench_json), "--json"],
            "bench-b": ["bench", str(src), "--quants", "Q3_K_M", "--hf", "", "-p", "8", "-n", "2", "-r", "1",
                        "--batch", "1", "-o", str(bench_json), "--json"]}
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def run(name: str) -> None:
        results[name] = edgeq(*runs[name], env=env)

    threads = [threading.Thread(target=run, args=(n,)) for n in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, r in results.items():
        assert r.returncode == 0, (name, r.stderr[-2000:])
        json.loads(r.stdout)  # each printed one whole object
    assert any("waiting: another edgeq run is writing into" in r.stderr for r in results.values())
    types = ("F16", "Q8_0", "Q6_K", "Q4_K_M", "Q5_K_M", "Q4_0", "Q5_0", "Q3_K_M")
    names = {f"tiny-{t}.gguf" for t in types}
    assert set(manifest.load(out).files) == names
    assert {p.name for p in out.glob("*.gguf")} == names and not list(out.glob("*.incomplete"))
    v = manifest.verify(out)
    assert v.passed and sorted(v.ok) == sorted(names)
    bench_res = json.loads(bench_json.read_text())
    assert bench_res["schema"].startswith("edgeq-bench/")  # whole: one bench's, not a mix
    assert {r["backend"] for r in bench_res["runs"]} == {"llama.cpp"}  # `--hf ""` means no transformers runs
    assert not list(tmp_path.glob("*.incomplete"))


# ---- 4. hostile metadata never reaches the terminal raw ------------------------------------------

HOSTILE = "evil\x1b[2J\x1b]0;pwned\x07\x1b[8mhidden\u202e"


@pytest.mark.parametrize("command", ["inspect", "plan"])
def test_escape_sequences_from_a_file_are_shown_not_obeyed(command, tmp_path):
    from conftest import write_small_gguf

    f = write_small_gguf(tmp_path / "m.gguf", name=HOSTILE, add_bos=False, tokens=["a", "b"], file_type=7)
    p = edgeq(command, str(f))
    for stream in (p.stdout, p.stderr):
        assert "\x1b" not in stream and "\x07" not in stream and "\u202e" not in stream
    if command == "inspect":
        assert p.returncode == 0 and "evil\\x1b[2J\\x1b]0;pwned\\x07" in p.stdout
    j = edgeq(command, str(f), "--json")
    assert "\x1b" not in j.stdout  # JSON escapes it (\u001b), and still holds the name
    if command == "inspect":
        assert json.loads(j.stdout)["name"] == HOSTILE


def test_printable_keeps_text_and_shows_controls():
    from edgeq.output import printable, to_jsonable

    assert printable("héllo\tworld\n") == "héllo\tworld\n"
    assert printable("a\x1b[31mb\r\x9bc\u202e") == "a\\x1b[31mb\\x0d\\x9bc\\u202e"
    assert to_jsonable({"ppl": float("nan"), "x": [float("inf"), 1.5]}) == {"ppl": None, "x": [None, 1.5]}


# ---- 6. user errors named as such, with honest messages ------------------------------------------

@pytest.mark.parametrize("content,message", [
    (b"\xff\xfe" + b"\x00garbage" * 50, "not UTF-8 text"),
    (b"hello \x00 world " * 600, "holds NUL bytes"),
    (b"word", "has 1 words; llama-imatrix needs at least 1024 tokens"),
])
def test_a_calibration_text_that_cannot_work_is_a_usage_error(content, message, tmp_path, embedded_checkpoint):
    f = tmp_path / "calib.txt"
    f.write_bytes(content)
    p = edgeq("convert", str(embedded_checkpoint), "--quant", "Q4_K_M", "--imatrix", "--calibration", str(f),
              "-o", str(tmp_path / "out"))
    one_line_error(p, 2, message)


def test_a_garbage_tokenizer_is_refused_before_converting(tmp_path):
    src = llama_layers(tmp_path)
    (src / "tokenizer.json").write_bytes(b"\xff\xfe\x00\x01 not json")
    with pytest.raises(SourceError, match="tokenizer.json in .* is not valid JSON"):
        checkpoint.check(src, supported=SUPPORTED)


@pytest.mark.parametrize("args,code,message", [
    (["run", "{gguf}", ""], 2, "the prompt is empty"),
    (["run", "{gguf}", "hi", "--ctx", "100000000"], 2, "--ctx 100,000,000 is beyond any model's context"),
    (["bench", "{gguf}", "--rpc", ",", "-o", "{tmp}/b.json"], 2, "--rpc ',' names no server"),
    (["eval", "ppl", "{gguf}", "--text", "{tmp}/short.txt", "-o", "{tmp}/e.json"], 2,
     "one window needs 512 (--ctx)"),
])
def test_misleading_messages_now_say_what_is_wrong(args, code, message, tmp_path, embedded_outputs):
    (tmp_path / "short.txt").write_text("Only a few words here.")
    p = edgeq(*[a.format(gguf=embedded_outputs[1], tmp=tmp_path) for a in args])
    one_line_error(p, code, message)
    assert "None" not in p.stderr


def test_rpc_server_host_names_are_resolved_to_an_address():
    from edgeq.llamacpp.rpc_server import numeric_host

    assert numeric_host("localhost") == "127.0.0.1" and numeric_host("[::1]") == "::1"
    with pytest.raises(UsageError, match="cannot resolve --host no.such.host.invalid"):
        numeric_host("no.such.host.invalid")


# ---- 2 (continued). a broken GGUF made elsewhere -------------------------------------------------

@pytest.fixture(scope="module")
def nan_gguf(tmp_path_factory, embedded_outputs) -> Path:
    """The embedded F16 with four NaNs written into blk.0.ffn_down.weight (as a file made by another tool)."""
    from edgeq.sources.gguf_header import read_header

    src = next(p for p in embedded_outputs if p.name.endswith("-F16.gguf"))
    dst = tmp_path_factory.mktemp("nan") / "nan-F16.gguf"
    shutil.copy(src, dst)
    h = read_header(dst)
    t = next(t for t in h.tensors if t.name == "blk.0.ffn_down.weight")
    with open(dst, "r+b") as f:
        f.seek(h.data_offset_bytes + t.offset + 100)
        f.write(b"\x00\x7e" * 4)
    return dst


def test_quantizing_nan_weights_names_the_tensor_llama_quantize_refused(nan_gguf, tmp_path):
    from edgeq.llamacpp.quantize import quantize
    from edgeq.quants import parse_quant
    from edgeq.sources.gguf_values import non_finite_tensors

    assert [(b.name, b.count) for b in non_finite_tensors(nan_gguf)] == [("blk.0.ffn_down.weight", 4)]
    with pytest.raises(SourceError, match="refused tensor 'blk.0.ffn_down.weight' as invalid data"):
        quantize(find_toolchain(), nan_gguf, tmp_path / "q.gguf", parse_quant("Q8_0"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["run", "{f}", "Hello there", "-n", "8"],
                                  ["eval", "ppl", "{f}", "--max-tokens", "1024", "-o", "{tmp}/e.json"]])
def test_a_model_with_nan_weights_is_an_error_not_silence(args, nan_gguf, tmp_path):
    p = edgeq(*[a.format(f=nan_gguf, tmp=tmp_path) for a in args])
    one_line_error(p, 1, "gives non-finite logits: its tensor blk.0.ffn_down.weight holds 4 NaN/Inf values")
    assert not (tmp_path / "e.json").exists()  # no result JSON, so none can hold NaN


def test_a_disk_that_fills_during_quantization_says_so(tmp_path, embedded_outputs):
    """A real full disk: a 40 MiB tmpfs in a private mount namespace, and the embedded F16 quantized into it."""
    f16 = next(p for p in embedded_outputs if p.name.endswith("-F16.gguf"))
    disk = tmp_path / "disk"
    disk.mkdir()
    code = ("import sys; from pathlib import Path; from edgeq.llamacpp import find_toolchain; "
            "from edgeq.llamacpp.quantize import quantize; from edgeq.quants import parse_quant; "
            "from edgeq.errors import DiskSpaceError\n"
            "try:\n    quantize(find_toolchain(), Path(sys.argv[1]), Path(sys.argv[2]), parse_quant('Q8_0'))\n"
            "except DiskSpaceError as e:\n    print('DISK', e, e.exit_code)\n")
    p = subprocess.run(["unshare", "-m", "sh", "-c", f'mount -t tmpfs -o size=40m tmpfs "{disk}" && '
                        f'"{sys.executable}" -c "$0" "{f16}" "{disk}/q.gguf" && ls -A "{disk}"', code],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "DISK the disk filled up while llama-quantize wrote" in p.stdout and p.stdout.rstrip().endswith(" 1")
    assert "q.gguf" not in p.stdout.split("1\n")[-1]  # the partial file was removed (ls printed nothing)


@pytest.mark.slow
def test_an_evil_pickle_under_allow_pickle_is_one_line(tmp_path, tiny_llama):
    import torch

    class Marker:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    src = tmp_path / "pickled"
    shutil.copytree(tiny_llama, src)
    (src / "model.safetensors").unlink()
    torch.save({"model.embed_tokens.weight": Marker()}, src / "pytorch_model.bin")
    assert not (tmp_path / "pwned").exists()
    p = edgeq("convert", str(src), "--q8", "--allow-pickle", "-o", str(tmp_path / "out"))
    one_line_error(p, 1, "holds a pickle that torch's safe loader refused")
    assert not (tmp_path / "pwned").exists()


# ---- the convert pre-flight, fuzzed ----------------------------------------------------------------

FUZZ_EXAMPLES = int(os.environ.get("EDGEQ_FUZZ_EXAMPLES", "200"))
_NAMES = ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"] + [
    f"model.layers.{i}.{k}" for i in range(3) for k in ("self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                                        "mlp.down_proj.weight", "input_layernorm.weight")]


def _fuzz_cases():
    from hypothesis import strategies as st

    num = st.one_of(st.integers(-2, 40), st.none(), st.text(max_size=3), st.floats(allow_nan=True), st.booleans())
    config = st.fixed_dictionaries({k: num for k in ("hidden_size", "num_attention_heads", "num_key_value_heads",
                                                     "intermediate_size", "num_hidden_layers", "vocab_size",
                                                     "head_dim")})
    entry = st.fixed_dictionaries({
        "dtype": st.sampled_from(["F32", "F16", "BF16", "I8", "Q9", 7]),
        "shape": st.one_of(st.lists(st.integers(-1, 40), max_size=3), st.text(max_size=2)),
        "data_offsets": st.one_of(st.lists(st.integers(-8, 5000), min_size=2, max_size=2), st.none()),
    })
    header = st.dictionaries(st.sampled_from(_NAMES), entry, max_size=8)
    return config, header, st.integers(0, 6000)


def test_fuzz_convert_preflight(tmp_path_factory):
    """Random configs × random safetensors headers: checkpoint.check passes or raises one SourceError, never more."""
    from hypothesis import HealthCheck, given, settings

    config, header, data_size = _fuzz_cases()

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(config, header, data_size)
    def run(cfg, hdr, size):
        src = write_minimal_checkpoint(tmp_path_factory.mktemp("fz"), **cfg)
        raw = json.dumps(hdr).encode()
        (src / "model.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * size)
        try:
            ck = checkpoint.check(src, supported=SUPPORTED)
        except SourceError as e:
            assert str(e) and "\n" not in str(e)
        else:
            assert ck.tensors == len(hdr)

    run()


def test_a_gguf_llama_cpp_cannot_load_is_blamed_on_the_file_not_on_ctx(tmp_path):
    from conftest import write_small_gguf

    f = write_small_gguf(tmp_path / "m.gguf", name="incomplete", add_bos=False, tokens=["a", "b"])
    p = edgeq("run", str(f), "hello", "-n", "2")
    one_line_error(p, 1, "llama.cpp cannot load", "does not match the model's metadata")
    assert "raise --ctx" not in p.stderr


@pytest.mark.parametrize("command", [["inspect"], ["run", "{f}", "hi"], ["bench"], ["plan"]])
def test_a_fifo_where_a_gguf_should_be_is_named(command, tmp_path):
    f = tmp_path / "f.gguf"
    os.mkfifo(f)
    args = [a.format(f=f) for a in command]
    p = edgeq(*args, *([] if len(command) > 1 else [str(f)]), timeout=60)
    assert p.returncode in (1, 2) and "is a FIFO, not a file" in p.stderr, p.stderr
