import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeq import manifest
from edgeq.cli import cli
from edgeq.conversion import output_name
from edgeq.errors import UsageError
from edgeq.files import (
    atomic_output,
    ensure_folder,
    final_name,
    incomplete_path,
    remove_stale_incomplete,
    safe_name,
)


def test_atomic_output_renames_only_when_whole(tmp_path):
    final = tmp_path / "m.gguf"
    with atomic_output(final) as tmp:
        assert re.fullmatch(rf"m\.gguf\.{os.getpid()}-[0-9a-f]{{8}}\.incomplete", tmp.name)
        assert final_name(tmp) == "m.gguf"
        tmp.write_bytes(b"GGUF")
    assert final.read_bytes() == b"GGUF"
    assert list(tmp_path.iterdir()) == [final]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_output_leaves_nothing_on_failure(tmp_path, exc):
    final = tmp_path / "m.gguf"
    with pytest.raises(exc):
        with atomic_output(final) as tmp:
            tmp.write_bytes(b"half")
            raise exc()
    assert list(tmp_path.iterdir()) == []


def test_two_writers_of_one_file_never_share_a_temporary(tmp_path):
    final = tmp_path / "m.gguf"
    with atomic_output(final) as a, atomic_output(final) as b:
        assert a != b
        a.write_bytes(b"first")
        b.write_bytes(b"second")
    assert final.read_bytes() == b"first"  # the outer one renamed last; both were whole
    assert list(tmp_path.iterdir()) == [final]


def test_remove_stale_incomplete_spares_live_writers(tmp_path):
    proc = subprocess.Popen(["sleep", "0"])  # a pid that has surely exited
    proc.wait()
    (tmp_path / f"a.gguf.{proc.pid}-00000000.incomplete").write_text("x")  # its writer is gone
    (tmp_path / "old.gguf.incomplete").write_text("x")  # an older edgeq's name
    mine = incomplete_path(tmp_path / "c.gguf")
    mine.write_text("x")  # this process is writing it
    (tmp_path / "b.gguf").write_text("x")
    removed = [p.name for p in remove_stale_incomplete(tmp_path)]
    assert removed == [f"a.gguf.{proc.pid}-00000000.incomplete", "old.gguf.incomplete"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.gguf", mine.name]


def test_folder_lock_makes_a_second_writer_wait_and_says_so(tmp_path):
    code = ("import sys, time; from pathlib import Path; from edgeq.files import folder_lock\n"
            "with folder_lock(Path(sys.argv[1]), doing='converts'):\n"
            "    print('in', time.time(), flush=True); time.sleep(float(sys.argv[2]))\n")
    first = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), "1.5"], stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None and first.stdout.readline().startswith("in")
    second = subprocess.run([sys.executable, "-c", code, str(tmp_path), "0"], capture_output=True, text=True,
                            timeout=60)
    first.wait(timeout=60)
    assert "waiting: another edgeq run is writing into" in second.stderr and second.returncode == 0
    # A holder killed by SIGKILL releases the folder with its death.
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), "60"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().startswith("in")
    holder.kill()
    holder.wait()
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path), "0"], capture_output=True, text=True,
                          timeout=30).stderr == ""


@pytest.mark.parametrize("make,what", [("file", "is a file, not a folder"), ("ro", "not writable")])
def test_an_output_folder_that_cannot_be_made_is_one_usage_error(make, what, tmp_path, monkeypatch):
    if make == "file":
        (tmp_path / "afile").write_text("x")
        target = tmp_path / "afile" / "sub"
    else:
        target = tmp_path / "ro"
        target.mkdir()
        monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != target)  # root ignores chmod; this does not
    with pytest.raises(UsageError, match=what):
        ensure_folder(target)


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


def test_a_changed_file_with_a_newer_mtime_is_not_reused(tmp_path):
    folder = _folder_with_manifest(tmp_path)
    m = manifest.load(folder)
    f = folder / "m-Q8_0.gguf"
    with open(f, "r+b") as fh:  # one bit flipped, same size, mtime moves on
        fh.seek(50)
        fh.write(b"\x01")
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    assert not manifest.is_current(folder, m, "m-Q8_0.gguf", "r1")
    f.write_bytes(b"GGUF" + b"\0" * 100)  # the recorded bytes again, with yet another mtime: hashed and reused
    assert manifest.is_current(folder, m, "m-Q8_0.gguf", "r1")
    assert m.files["m-Q8_0.gguf"].mtime_ns == f.stat().st_mtime_ns


def test_verify_refuses_a_symlinked_output(tmp_path):
    (tmp_path / "a").mkdir()
    folder = _folder_with_manifest(tmp_path / "a")
    real = tmp_path / "elsewhere.gguf"
    (folder / "m-Q8_0.gguf").rename(real)
    (folder / "m-Q8_0.gguf").symlink_to(real)  # same bytes, but `rsync -a` would ship the link
    res = manifest.verify(folder)
    assert res.linked == ["m-Q8_0.gguf"] and not res.passed
    assert not manifest.is_current(folder, manifest.load(folder), "m-Q8_0.gguf", "r1")
    out = CliRunner().invoke(cli, ["verify", str(folder)])
    assert out.exit_code == 1 and "SYMLINK   m-Q8_0.gguf" in out.output


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

    from edgeq.conversion.recorder import Recorder

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

    from edgeq.conversion.recorder import TailHash

    path = tmp_path / "f.gguf.incomplete"
    writer = ("import sys, time\nwith open(sys.argv[1], 'wb') as f:\n    for i in range(40):\n"
              "        f.write(bytes([i]) * 100_003); f.flush(); time.sleep(0.005)\n")
    follower = TailHash(path)
    subprocess.run([sys.executable, "-c", writer, str(path)], check=True)
    assert follower.finish() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_tail_hash_of_a_file_that_never_appears_is_none(tmp_path):
    from edgeq.conversion.recorder import TailHash

    assert TailHash(tmp_path / "never.gguf").finish() is None
