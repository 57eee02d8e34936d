import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeq import manifest
from edgeq.cli import cli
from edgeq.convert import output_name
from edgeq.errors import UsageError
from edgeq.files import atomic_output, incomplete_path, remove_stale_incomplete, safe_name


def test_atomic_output_renames_only_when_whole(tmp_path):
    final = tmp_path / "m.gguf"
    with atomic_output(final) as tmp:
        assert tmp.name == "m.gguf.incomplete"
        tmp.write_bytes(b"GGUF")
    assert final.read_bytes() == b"GGUF"
    assert not incomplete_path(final).exists()


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_output_leaves_nothing_on_failure(tmp_path, exc):
    final = tmp_path / "m.gguf"
    with pytest.raises(exc):
        with atomic_output(final) as tmp:
            tmp.write_bytes(b"half")
            raise exc()
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_replaces_a_stale_temporary(tmp_path):
    final = tmp_path / "m.gguf"
    incomplete_path(final).write_bytes(b"left by kill -9")
    with atomic_output(final) as tmp:
        assert not tmp.exists()
        tmp.write_bytes(b"new")
    assert final.read_bytes() == b"new"


def test_remove_stale_incomplete(tmp_path):
    (tmp_path / "a.gguf.incomplete").write_text("x")
    (tmp_path / "b.gguf").write_text("x")
    assert [p.name for p in remove_stale_incomplete(tmp_path)] == ["a.gguf.incomplete"]
    assert [p.name for p in tmp_path.iterdir()] == ["b.gguf"]


@pytest.mark.parametrize("src,stem", [
    ("meta-llama/Llama-3.2-1B", "Llama-3.2-1B"),
    ("/data/ckpt/My Model/", "My-Model"),
    ("../../x", "x"),
    ("/etc/x", "x"),
    ("modèle ü", "mod-le"),
])
def test_safe_name_never_leaves_the_folder(src, stem):
    assert safe_name(src) == stem
    assert "/" not in safe_name(src) and not safe_name(src).startswith(".")


def test_safe_name_rejects_names_with_nothing_usable():
    with pytest.raises(UsageError, match="--name"):
        safe_name("../..")


def test_output_names_follow_llama_cpp():
    assert output_name("Llama-3.2-1B", "Q8_0") == "Llama-3.2-1B-Q8_0.gguf"
    assert output_name("Llama-3.2-1B", "Q4_K_M") == "Llama-3.2-1B-Q4_K_M.gguf"


def _folder_with_manifest(tmp_path: Path) -> Path:
    (tmp_path / "m-Q8_0.gguf").write_bytes(b"GGUF" + b"\0" * 100)
    m = manifest.Manifest(source={"kind": "local", "fingerprint": "f"}, llama_cpp="llama.cpp x", options={})
    m.files["m-Q8_0.gguf"] = manifest.record(tmp_path / "m-Q8_0.gguf", "Q8_0", 8.5, "r1")
    manifest.save(tmp_path, m)
    return tmp_path


def test_manifest_round_trip_and_currency(tmp_path):
    folder = _folder_with_manifest(tmp_path)
    m = manifest.load(folder)
    assert m.files["m-Q8_0.gguf"].size_bytes == 104
    assert manifest.is_current(folder, m, "m-Q8_0.gguf", "r1")
    assert not manifest.is_current(folder, m, "m-Q8_0.gguf", "other-recipe")
    (folder / "m-Q8_0.gguf").write_bytes(b"GGUF")  # truncated copy
    assert not manifest.is_current(folder, m, "m-Q8_0.gguf", "r1")


def test_damaged_manifest_is_a_clear_error(tmp_path):
    (tmp_path / "edgeq-manifest.json").write_text("{not json")
    with pytest.raises(Exception, match="damaged.*--force"):
        manifest.load(tmp_path)


def test_verify_cli_passes_then_reports_a_changed_file(tmp_path):
    folder = _folder_with_manifest(tmp_path)
    ok = CliRunner().invoke(cli, ["verify", str(folder), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.output)["passed"] is True
    with open(folder / "m-Q8_0.gguf", "r+b") as f:
        f.seek(50)
        f.write(b"\x01")
    from edgeq.cli import main

    with pytest.raises(SystemExit) as e:
        main(["verify", str(folder)])
    assert e.value.code == 1


@pytest.mark.parametrize("exc", [None, KeyboardInterrupt])
def test_recorder_hashes_in_the_background_and_records_every_finished_file(tmp_path, exc):
    """What convert does with each output: hashed while the next one is made; on Ctrl-C, still recorded."""
    import contextlib
    import hashlib

    from edgeq.convert.recorder import Recorder

    mf = manifest.Manifest(source={"kind": "local"}, llama_cpp="t", options={})
    files = []
    for i in range(3):
        f = tmp_path / f"m-{i}.gguf"
        f.write_bytes(bytes([i]) * (3 << 20))
        files.append(f)
    with pytest.raises(exc) if exc else contextlib.nullcontext():
        with Recorder(tmp_path, mf) as rec:
            for f in files:
                rec.add(f, "Q8_0", 8.5, "r")
            if exc:
                raise exc()
    saved = manifest.load(tmp_path)
    assert saved is not None and sorted(saved.files) == [f.name for f in files]
    for f in files:
        assert saved.files[f.name].sha256 == hashlib.sha256(f.read_bytes()).hexdigest()
    assert set(rec.seconds) == {f.name for f in files}
    assert manifest.verify(tmp_path).passed



def test_tail_hash_follows_a_file_as_another_process_writes_it(tmp_path):
    import hashlib
    import subprocess
    import sys

    from edgeq.convert.recorder import TailHash

    path = tmp_path / "f.gguf.incomplete"
    writer = ("import sys, time\nwith open(sys.argv[1], 'wb') as f:\n    for i in range(40):\n"
              "        f.write(bytes([i]) * 100_003); f.flush(); time.sleep(0.005)\n")
    follower = TailHash(path)
    subprocess.run([sys.executable, "-c", writer, str(path)], check=True)
    assert follower.finish() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_tail_hash_of_a_file_that_never_appears_is_none(tmp_path):
    from edgeq.convert.recorder import TailHash

    assert TailHash(tmp_path / "never.gguf").finish() is None
