"""Reliability and safety (issue 5): untrusted checkpoints, paths, interruptions, disk, malformed files.

What tests elsewhere already prove is not repeated here: pickle refusal and the
bad-checkpoint messages (test_convert_errors.py), a failing llama-quantize
(test_convert_e2e.py), atomic writes and stale-file removal (test_files_manifest.py),
Ctrl-C in the bench matrix (test_bench.py), truncated GGUFs (test_inspect.py).
The fuzz tests run EDGEQ_FUZZ_EXAMPLES examples per strategy (default 200);
set it higher for a long run, e.g. EDGEQ_FUZZ_EXAMPLES=20000.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import final_ggufs, run_main, write_minimal_checkpoint, write_small_gguf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgeq.conversion as convert_mod
import edgeq.conversion.pipeline as pipeline
from edgeq import config, manifest, system
from edgeq.cli import main
from edgeq.errors import DiskSpaceError, GGUFError, SourceError
from edgeq.files import atomic_output, final_name
from edgeq.llamacpp import find_toolchain, supported_architectures
from edgeq.output import to_jsonable
from edgeq.quants import parse_quant
from edgeq.sources import checkpoint
from edgeq.sources.gguf import read as read_gguf
from edgeq.sources.gguf import read_header as read_gguf_header

FUZZ_EXAMPLES = int(os.environ.get("EDGEQ_FUZZ_EXAMPLES", "200"))
EDGEQ = Path(sys.executable).with_name("edgeq")


def write_seed_gguf(path: Path) -> Path:
    """A small but complete GGUF: scalars, strings, a string array, F32 and Q8_0 tensors."""
    return write_small_gguf(path, name="fuzz-seed", add_bos=True, tokens=["<s>", "a", "b", "é"], file_type=7,
                            norm="output_norm.weight", weight="blk.0.attn_q.weight")


@pytest.fixture(scope="module")
def seed_gguf(tmp_path_factory) -> Path:
    return write_seed_gguf(tmp_path_factory.mktemp("seed") / "seed.gguf")


@pytest.fixture
def tiny_source(tmp_path) -> Path:
    """Passes every pre-flight check (config, tokenizer, a real safetensors header)."""
    from safetensors.numpy import save_file

    src = write_minimal_checkpoint(tmp_path / "src")
    save_file({"model.embed_tokens.weight": np.zeros((8, 256), dtype=np.float32)}, str(src / "model.safetensors"))
    return src


@pytest.fixture
def stub_float(monkeypatch, seed_gguf):
    """Replace the converter with a copy of the seed GGUF (written the same atomic way)."""
    calls = []

    def fake(tc, ck, dst, q, progress):
        calls.append(dst)
        with atomic_output(dst) as tmp:
            shutil.copy(seed_gguf, tmp)
        return 1, None, 0.0

    monkeypatch.setattr(pipeline, "_convert_float", fake)
    return calls


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# ---- 1. untrusted checkpoints --------------------------------------------------------------------

@pytest.mark.parametrize("config_file", ["tokenizer_config.json", "preprocessor_config.json", "generation_config.json"])
def test_remote_code_in_any_config_is_refused(config_file, tiny_source, tmp_path, capsys):
    (tiny_source / config_file).write_text(json.dumps({"auto_map": {"AutoTokenizer": ["evil.Tok", None]}}))
    code, err, _ = run_main(["convert", str(tiny_source), "--q8", "-o", str(tmp_path / "out")], capsys)
    assert code == 1 and f"{config_file} in " in err and "never runs remote code" in err
    assert final_ggufs(tmp_path / "out") == []


@pytest.mark.slow
def test_converter_runs_with_remote_code_disabled(tmp_path):
    """The vendored converter asks for trust_remote_code=True in places; edgeq's runner makes it inert."""
    script = tmp_path / "fake_converter.py"
    script.write_text("import sys\nfrom transformers import AutoTokenizer\n"
                      "AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)\n")

    def evil_repo(name: str) -> tuple[Path, Path]:
        repo, marker = tmp_path / name, tmp_path / f"{name}-ran"
        repo.mkdir()
        (repo / "tokenization_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                                   "from transformers import PreTrainedTokenizer as EvilTokenizer\n")
        (repo / "tokenizer_config.json").write_text(
            json.dumps({"auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}}))
        (repo / "config.json").write_text(json.dumps({"model_type": "llama"}))
        return repo, marker

    (guarded_repo, guarded_marker), (plain_repo, plain_marker) = evil_repo("guarded"), evil_repo("plain")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    guarded = subprocess.Popen([sys.executable, "-c", pipeline._NO_REMOTE_CODE, script, guarded_repo], **run)
    # The same script without edgeq's runner does run the repo's code: the guard is what stops it.
    plain = subprocess.Popen([sys.executable, script, plain_repo], **run)
    guarded_out, plain_out = guarded.communicate(timeout=120)[0], plain.communicate(timeout=120)[0]
    assert not guarded_marker.exists(), guarded_out[-2000:]
    assert plain_marker.exists(), plain_out[-2000:]


@pytest.mark.slow
def test_allow_pickle_converts_plain_tensors(tiny_llama, tmp_path):
    """--allow-pickle works for an honest .bin (torch.load(weights_only=True) accepts plain tensors)."""
    import torch
    from safetensors.torch import load_file

    src = shutil.copytree(tiny_llama, tmp_path / "pk", ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(load_file(tiny_llama / "model.safetensors"), src / "pytorch_model.bin")
    res = convert_mod.convert(str(src), quants=["F16"], outdir=tmp_path / "out", allow_pickle=True, progress=False)
    assert [o.type for o in res.outputs] == ["F16"] and res.convert_peak_rss_bytes > 50 * 2**20


# ---- 2. paths and names -------------------------------------------------------------------------

@pytest.mark.parametrize("name,stem", [("../../x", "x"), ("/etc/x", "x"), ("my model", "my-model"),
                                       ("modèle ü", "mod-le"), ("..\\..\\x", "x"), ("x/../../../y", "y")])
def test_output_names_never_leave_the_output_folder(name, stem, tiny_source, tmp_path, stub_float):
    before = files_under(tmp_path)
    out = tmp_path / "deep" / "out"
    res = convert_mod.convert(str(tiny_source), quants=["F16"], outdir=out, name=name, progress=False)
    new = files_under(tmp_path) - before
    assert new and all(p.resolve().is_relative_to(out.resolve()) for p in new), new
    assert Path(res.outputs[0].path).name == f"{stem}-F16.gguf"
    # Without -o the default folder is models/<stem>/: still inside the models folder.
    res = convert_mod.convert(str(tiny_source), quants=["F16"], name=name, progress=False)
    assert Path(res.outdir).resolve() == (config.models_dir() / stem).resolve()


def test_source_folder_with_spaces_and_unicode(tmp_path, stub_float):
    from safetensors.numpy import save_file

    src = write_minimal_checkpoint(tmp_path / "my ckpt ü")
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(src / "model.safetensors"))
    res = convert_mod.convert(str(src), quants=["F16"], outdir=tmp_path / "o u t", progress=False)
    assert Path(res.outputs[0].path) == tmp_path / "o u t" / "my-ckpt-F16.gguf"


@pytest.mark.parametrize("source", ["../../x", "/etc/x", "org/../../x", "bad name/x"])
def test_bad_sources_are_usage_errors_and_write_nothing(source, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err, _ = run_main(["convert", source, "--q8"], capsys)
    assert code == 2 and "neither a local folder nor a Hugging Face repo id" in err
    assert files_under(tmp_path) == set()


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "sub/x.gguf", ".."])
def test_manifest_naming_files_outside_its_folder_is_refused(bad, tmp_path):
    (tmp_path / "edgeq-manifest.json").write_text(json.dumps({
        "source": {}, "llama_cpp": "x", "files": {bad: {"type": "Q8_0", "sha256": "0", "size_bytes": 1,
                                                       "bits_per_weight": 8.5, "recipe": "r", "created": "t"}}}))
    with pytest.raises(SourceError, match="not a plain name inside the folder"):
        manifest.verify(tmp_path)


# ---- 3. interrupted runs (real subprocesses, real tools) ----------------------------------------

def _hanging_llama_dir(tmp: Path) -> Path:
    """The vendored tree, with a converter that writes half its file, signals, then hangs.

    (Fake, so that reaching this stage costs no torch import: what is tested is edgeq's
    handling of a converter caught mid-write; the real converter runs in the later steps.)
    """
    real = config.llama_dir()
    fake = tmp / "llama.cpp"
    fake.mkdir()
    for p in real.iterdir():
        if p.name != "convert_hf_to_gguf.py":
            (fake / p.name).symlink_to(p)
    (fake / "convert_hf_to_gguf.py").write_text(
        "import os, sys, time\n"
        "out = sys.argv[sys.argv.index('--outfile') + 1]\n"
        "open(out, 'wb').write(b'GGUF' + bytes(1000))\n"
        "open(os.environ['EDGEQ_TEST_STAGE'], 'w').close()\ntime.sleep(300)\n")
    return fake


def _slow_build_dir(tmp: Path) -> Path:
    """The build, with a llama-quantize that signals when its file is whole, then hangs."""
    fake_bin = tmp / "build" / "bin"
    fake_bin.mkdir(parents=True)
    for f in config.bin_dir().iterdir():
        (fake_bin / f.name).symlink_to(f)
    (fake_bin / "llama-quantize").unlink()
    # The hanging sleep keeps the arguments in its command line, so _tools_of finds it.
    (fake_bin / "llama-quantize").write_text(
        f'#!/bin/bash\n"{config.bin_dir() / "llama-quantize"}" "$@" || exit $?\n'
        ': > "$EDGEQ_TEST_STAGE"\nexec -a "sleeping-quantize $*" sleep 300\n')
    os.chmod(fake_bin / "llama-quantize", 0o755)
    return fake_bin.parent


def _tools_of(out: Path) -> list[int]:
    """Pids of processes whose command line mentions ``out`` (the converter, llama-quantize)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if str(out).encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def _edgeq(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    # SIGINT back to its default, so Python turns it into KeyboardInterrupt even when
    # this test runs in a background job (where the shell ignores SIGINT).
    return subprocess.Popen([str(EDGEQ), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _interrupt_at(stage: Path, args: list[str], env: dict[str, str], sig: int) -> tuple[int, str, str]:
    """Start edgeq, wait until the stage file appears, send ``sig``; return (rc, stdout, stderr)."""
    stage.unlink(missing_ok=True)
    proc = _edgeq(args, {**env, "EDGEQ_TEST_STAGE": str(stage)})
    deadline = time.monotonic() + 180
    while not stage.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "stage never reached"
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def _no_tools_left(out: Path) -> bool:
    deadline = time.monotonic() + 10
    while _tools_of(out) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _tools_of(out)


@pytest.mark.slow
def test_interrupted_convert_loses_nothing_and_resumes(tiny_llama, tmp_path):
    """SIGKILL and SIGINT during F16 conversion and during quantization, then a clean rerun."""
    out = tmp_path / "out"
    args = ["convert", str(tiny_llama), "--q8", "-o", str(out), "--json"]
    f16, q8 = out / "tiny-llama-F16.gguf", out / "tiny-llama-Q8_0.gguf"
    slow_convert = {"EDGEQ_LLAMA_DIR": str(_hanging_llama_dir(tmp_path))}
    slow_quantize = {"EDGEQ_BUILD_DIR": str(_slow_build_dir(tmp_path))}

    # SIGKILL while the converter is half-way through its file: the converter dies with edgeq.
    rc, _, _ = _interrupt_at(tmp_path / "a", args, slow_convert, signal.SIGKILL)
    assert rc == -signal.SIGKILL and _no_tools_left(out)
    (left,) = out.iterdir()
    assert final_name(left) == "tiny-llama-F16.gguf" and left.name.endswith(".incomplete")

    # SIGINT at the same point: the stale file goes first, the new partial one on the way out.
    rc, stdout, stderr = _interrupt_at(tmp_path / "b", args, slow_convert, signal.SIGINT)
    err = json.loads(stdout)
    assert rc == 130 and (err["error"], err["exit_code"]) == ("interrupted", 130) and "again" in err["message"]
    assert f"removed {left.name}, left by an interrupted run" in stderr
    assert "Traceback" not in stderr and _no_tools_left(out) and list(out.iterdir()) == []

    # SIGINT while llama-quantize's file is whole but not yet renamed: F16 finished, so it is kept.
    rc, stdout, stderr = _interrupt_at(tmp_path / "c", args, slow_quantize, signal.SIGINT)
    assert rc == 130 and json.loads(stdout)["error"] == "interrupted" and _no_tools_left(out)
    assert sorted(p.name for p in out.iterdir()) == ["edgeq-manifest.json", f16.name]
    assert list(manifest.load(out).files) == [f16.name] and manifest.verify(out).passed
    f16_made = f16.stat().st_mtime_ns

    # SIGKILL during quantization: the partial Q8_0 stays under its temporary name only.
    rc, _, _ = _interrupt_at(tmp_path / "d", args, slow_quantize, signal.SIGKILL)
    assert rc == -signal.SIGKILL and _no_tools_left(out)
    names = sorted(p.name for p in out.iterdir())
    assert names[:2] == ["edgeq-manifest.json", f16.name] and len(names) == 3
    q8_left = out / names[2]
    assert final_name(q8_left) == q8.name and q8_left.name.endswith(".incomplete")

    # A plain rerun removes the stale file, reuses F16 (per the manifest) and makes only Q8_0.
    proc = _edgeq(args, {})
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    res = json.loads(stdout)
    assert {o["type"]: o["reused"] for o in res["outputs"]} == {"F16": True, "Q8_0": False}
    assert res["convert_peak_rss_bytes"] is None  # nothing was converted this time
    assert f"removed {q8_left.name}" in stderr and f16.stat().st_mtime_ns == f16_made
    assert sorted(p.name for p in out.iterdir()) == ["edgeq-manifest.json", f16.name, q8.name]
    assert manifest.verify(out).passed
    # The disk estimate made before converting was not short of what was written.
    ck = checkpoint.check(tiny_llama, supported=supported_architectures(find_toolchain().llama_dir))
    for o in res["outputs"]:
        assert convert_mod.estimate_output_bytes(ck.parameters, parse_quant(o["type"]), 256) >= o["size_bytes"]

    # --force, killed while it remakes Q8_0: the old Q8_0 is still on disk and still recorded (it used to be
    # dropped from the manifest as soon as a forced run started).
    q8_bytes = q8.read_bytes()
    rc, _, _ = _interrupt_at(tmp_path / "e", [*args, "--force"], slow_quantize, signal.SIGKILL)
    assert rc == -signal.SIGKILL and _no_tools_left(out)
    assert set(manifest.load(out).files) == {f16.name, q8.name} and q8.read_bytes() == q8_bytes
    assert manifest.verify(out).passed


# ---- 4. disk and memory --------------------------------------------------------------------------

def test_disk_check_at_the_boundary(tiny_source, tmp_path, monkeypatch, stub_float):
    need = convert_mod.estimate_output_bytes(8 * 256, parse_quant("F16"), 256)
    out = tmp_path / "out"
    monkeypatch.setattr(system, "free_disk_bytes", lambda p: need + convert_mod.DISK_MARGIN_BYTES - 1)
    with pytest.raises(DiskSpaceError, match=r"need about 0\.03 GiB \(F16 0\.03\) \+0\.25 GiB margin, and 0\.28 GiB"):
        convert_mod.convert(str(tiny_source), quants=["F16"], outdir=out, progress=False)
    assert stub_float == [] and list(out.iterdir()) == []
    monkeypatch.setattr(system, "free_disk_bytes", lambda p: need + convert_mod.DISK_MARGIN_BYTES)
    convert_mod.convert(str(tiny_source), quants=["F16"], outdir=out, progress=False)
    assert [p.name for p in stub_float] == ["src-F16.gguf"]


def test_disk_estimate_lists_each_output_and_counts_only_missing_ones(tiny_source, tmp_path, monkeypatch, stub_float):
    out = tmp_path / "out"
    convert_mod.convert(str(tiny_source), quants=["F16"], outdir=out, progress=False)  # F16 now exists
    monkeypatch.setattr(system, "free_disk_bytes", lambda p: 1024)
    with pytest.raises(DiskSpaceError) as e:
        convert_mod.convert(str(tiny_source), quants=["Q8_0", "Q4_K_M"], outdir=out, progress=False)
    assert "(Q8_0 0.03, Q4_K_M 0.03)" in str(e.value) and "F16" not in str(e.value)


def test_disk_estimate_uses_the_fallback_type_where_k_blocks_do_not_fit():
    q4 = parse_quant("Q4_K_M")
    n = 10**9
    assert convert_mod.estimate_output_bytes(n, q4, 576) > convert_mod.estimate_output_bytes(n, q4, 4096)
    # SmolLM2-135M (hidden 576): the real Q4_K_M file is 105,454,048 bytes, F16 270,885,856.
    assert convert_mod.estimate_output_bytes(134_515_008, q4, 576) >= 105_454_048
    assert convert_mod.estimate_output_bytes(134_515_008, parse_quant("F16"), 576) >= 270_885_856


def test_tool_peak_rss_is_measured():
    from edgeq.llamacpp import run_tool

    ballast = bytearray(600 * 2**20)  # a parent larger than the tool: its peak must not leak into the figure
    ballast[::4096] = b"\x01" * len(ballast[::4096])
    out = run_tool([sys.executable, "-c", "import time; x = bytearray(200 * 2**20); time.sleep(0.3); print('ok')"])
    assert out == ["ok"] and 200 * 2**20 < out.peak_rss_bytes < 400 * 2**20


def test_a_full_disk_mid_write_is_named_not_hidden_behind_a_progress_bar():
    from edgeq.errors import ToolFailed
    from edgeq.llamacpp import run_tool

    script = ("import sys; print('Writing: 10%|#  | 5M/52M'); print('OSError: [Errno 28] No space left on device'); "
              "print('Writing: 10%|#  | 5M/52M'); sys.exit(1)")
    with pytest.raises(ToolFailed, match=r"failed \(exit 1\): OSError: \[Errno 28\] No space left on device "
                                         r"The disk filled up"):
        run_tool([sys.executable, "-c", script], name="convert_hf_to_gguf.py")


def test_convert_summary_reports_the_converter_peak_rss(monkeypatch, capsys):
    res = convert_mod.ConvertResult({}, "out", "out/edgeq-manifest.json", "llama.cpp x", convert_peak_rss_bytes=300 * 2**20)
    monkeypatch.setattr(importlib.import_module("edgeq.cli.models"), "run_convert", lambda source, **kw: res)
    main(["convert", "x"])
    assert "converter peak RSS: 300" in capsys.readouterr().err


def test_convert_never_asks_for_eager_conversion(tiny_source, tmp_path, monkeypatch):
    seen = []

    def fake_run_tool(argv, **kw):
        seen.append([str(a) for a in argv])
        raise KeyboardInterrupt  # stop here: only the command line matters

    monkeypatch.setattr(pipeline, "run_tool", fake_run_tool)
    with pytest.raises(KeyboardInterrupt):
        convert_mod.convert(str(tiny_source), quants=["F16"], outdir=tmp_path / "out", progress=False)
    (argv,) = seen
    assert "--no-lazy" not in argv and argv[1:3] == ["-c", pipeline._NO_REMOTE_CODE]
    assert list((tmp_path / "out").iterdir()) == []


# ---- 5. malformed inputs: fuzzing --------------------------------------------------------------

FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=10_000, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _inspect_ok_or_one_error(path: Path, data: bytes) -> None:
    """The GGUF reader both ways: the summary inspect prints, and the raw header plan reads."""
    path.write_bytes(data)
    for reader in (read_gguf, read_gguf_header):
        try:
            info = reader(path)
        except GGUFError as e:
            assert "\n" not in str(e)
        else:
            json.dumps(to_jsonable(info))  # what `inspect --json` prints must serialise


def _flip(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    b = bytearray(data)
    for pos, bit in flips:
        b[pos % len(b)] ^= 1 << bit
    return bytes(b)


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=8))
def test_fuzz_gguf_bit_flips(seed_gguf, tmp_path, flips):
    _inspect_ok_or_one_error(tmp_path / "f.gguf", _flip(seed_gguf.read_bytes(), flips))


@FUZZ
@given(cut=st.integers(0, 10**6))
def test_fuzz_gguf_truncated(seed_gguf, tmp_path, cut):
    data = seed_gguf.read_bytes()
    _inspect_ok_or_one_error(tmp_path / "t.gguf", data[: cut % len(data)])


@FUZZ
@given(pos=st.integers(4, 700), junk=st.binary(min_size=1, max_size=16))
def test_fuzz_gguf_header_overwritten(seed_gguf, tmp_path, pos, junk):
    data = bytearray(seed_gguf.read_bytes())
    data[pos:pos + len(junk)] = junk  # counts, lengths and type codes live in the first few hundred bytes
    _inspect_ok_or_one_error(tmp_path / "o.gguf", bytes(data))


@FUZZ
@given(body=st.binary(max_size=4096), magic=st.booleans())
def test_fuzz_gguf_random_bytes(tmp_path, body, magic):
    _inspect_ok_or_one_error(tmp_path / "r.gguf", (b"GGUF" if magic else b"") + body)


@pytest.fixture(scope="module")
def supported():
    return supported_architectures(find_toolchain().llama_dir)


def _check_ok_or_one_error(folder: Path, weights: bytes, supported) -> None:
    (folder / "model.safetensors").write_bytes(weights)
    try:
        checkpoint.check(folder, supported=supported)
    except SourceError as e:
        assert "\n" not in str(e)


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=6))
def test_fuzz_safetensors_bit_flips(tiny_source, supported, flips):
    data = (tiny_source / "model.safetensors").read_bytes()
    header_len = 8 + int.from_bytes(data[:8], "little")
    _check_ok_or_one_error(tiny_source, _flip(data[:header_len], flips) + data[header_len:], supported)


def _containers(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                       _containers, max_leaves=8)


@FUZZ
@given(value=JSONISH, where=st.sampled_from(["entry", "shape", "data_offsets", "dtype", "header"]))
def test_fuzz_safetensors_header_values(tiny_source, supported, value, where):
    entry = {"dtype": "F32", "shape": [8, 256], "data_offsets": [0, 8 * 256 * 4]}
    header = {"model.embed_tokens.weight": value if where == "entry" else {**entry, where: value}}
    raw = json.dumps(value if where == "header" else header).encode()
    _check_ok_or_one_error(tiny_source, len(raw).to_bytes(8, "little") + raw + bytes(8 * 256 * 4), supported)


@FUZZ
@given(value=JSONISH, where=st.sampled_from(["whole", "source", "files", "record", "sha256"]))
def test_fuzz_manifest(tmp_path, value, where):
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    rec = {"type": "Q8_0", "sha256": "0" * 64, "size_bytes": 4, "bits_per_weight": 8.5, "recipe": "r", "created": "t"}
    m = {"source": {}, "llama_cpp": "x", "options": {}, "files": {"a.gguf": rec}}
    if where == "whole":
        m = value
    elif where == "record":
        m["files"]["a.gguf"] = value
    elif where == "sha256":
        rec["sha256"] = value
    else:
        m[where] = value
    (tmp_path / "edgeq-manifest.json").write_text(json.dumps(m))
    try:
        manifest.verify(tmp_path)
    except SourceError as e:
        assert "\n" not in str(e)


@pytest.mark.slow
def test_damaged_files_through_the_cli_are_one_line_never_a_traceback(seed_gguf, tmp_path):
    data = seed_gguf.read_bytes()
    rng = np.random.default_rng(5)
    cases = {"truncated": data[:300], "flipped": _flip(data, [(40, 7), (41, 6), (60, 1)]),
             "huge-count": data[:16] + (2**63).to_bytes(8, "little") + data[24:],
             "random": b"GGUF" + rng.bytes(2000), "empty": b""}
    for name, body in cases.items():
        f = tmp_path / f"{name}.gguf"
        f.write_bytes(body)
        for extra in ([], ["--json"]):
            r = subprocess.run([str(EDGEQ), "inspect", str(f), *extra], capture_output=True, text=True, timeout=60)
            assert r.returncode == 1, (name, r.stderr)
            assert "Traceback" not in r.stderr + r.stdout, (name, r.stderr)
            if extra:
                assert json.loads(r.stdout)["error"] == "gguf"
            else:
                assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("Error: "), r.stderr


def test_not_json_not_an_object_and_bad_architectures_field(tmp_path, capsys):
    for i, cfg in enumerate(["[1, 2]", '{"architectures": "LlamaForCausalLM"}', "\xff\xfe"]):
        src = write_minimal_checkpoint(tmp_path / f"s{i}")
        (src / "config.json").write_text(cfg, encoding="latin-1")
        code, err, _ = run_main(["convert", str(src), "--q8", "-o", str(tmp_path / "out")], capsys)
        assert code == 1 and len(err.splitlines()) == 1, err
        assert "LlamaForCausalLM" in err or "not a JSON object" in err or "not valid JSON" in err


# ---- 6. integrity --------------------------------------------------------------------------------

def test_verify_json_lists_mismatched_and_missing_files_and_exits_1(tmp_path, capsys):
    for n in ("a.gguf", "b.gguf", "c.gguf"):
        (tmp_path / n).write_bytes(n.encode() * 100)
    m = manifest.Manifest(source={}, llama_cpp="x", options={})
    m.files = {n: manifest.record(tmp_path / n, "Q8_0", 8.5, "r") for n in ("a.gguf", "b.gguf", "c.gguf")}
    manifest.save(tmp_path, m)
    (tmp_path / "b.gguf").write_bytes(b"b.gguf" * 99 + b"B.gguf")  # same size, different bytes
    (tmp_path / "c.gguf").unlink()
    code, _, out = run_main(["verify", str(tmp_path), "--json"], capsys)
    res = json.loads(out)
    assert code == 1 and res["passed"] is False
    assert (res["ok"], res["mismatched"], res["missing"]) == (["a.gguf"], ["b.gguf"], ["c.gguf"])


# ---- 7. exit codes and --json errors ---------------------------------------------------------------

def test_every_error_kind_is_json_under_json(tmp_path, capsys, monkeypatch):
    cases = [(["convert", "--bogus"], 2, "usage"),
             (["inspect", str(tmp_path / "missing.gguf")], 1, "gguf"),
             (["verify", str(tmp_path)], 1, "source")]
    for args, code, kind in cases:
        got, err, out = run_main([*args, "--json"], capsys)
        assert (got, json.loads(out)["error"], json.loads(out)["exit_code"], err) == (code, kind, code, "")
    monkeypatch.setenv("EDGEQ_LLAMA_DIR", str(tmp_path / "no-llama"))
    got, _, out = run_main(["convert", str(tmp_path), "--json"], capsys)
    assert got == 3 and json.loads(out)["error"] == "toolchain" and "setup.sh" in json.loads(out)["message"]

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module("edgeq.cli.models"), "read", interrupted)
    got, _, out = run_main(["inspect", "x.gguf", "--json"], capsys)
    assert got == 130 and json.loads(out)["error"] == "interrupted"
