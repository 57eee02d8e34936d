"""llama.cpp crashing on this CPU, forced for real: every command says so in one line, with exit code 4.

``tests/native/crash_shim.c``, preloaded into the processes edgeq starts, makes
llama.cpp die of a real SIGSEGV at its first graph computation (where ggml's
CPU kernels run, and where the AMX kernels crashed on Intel machines), or at its
first GGUF open for tools that never compute. The test process itself never
loads llama.cpp, so a crash can only fail the command under test.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import run_main

from edgeq.errors import EXIT_CRASH, NativeCrash
from edgeq.llamacpp import crash_error

slow = pytest.mark.slow
SHIM_SOURCE = Path(__file__).parent / "native" / "crash_shim.c"


@pytest.fixture(scope="session")
def crash_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed to build llama.cpp and this shim"
    out = tmp_path_factory.mktemp("shim") / "crash_shim.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(SHIM_SOURCE), "-ldl"], check=True)
    return out


@pytest.fixture(scope="session")
def tiny_q8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke test's tiny model in Q8_0 (a couple of MiB, made in a second)."""
    from edgeq.diagnosis.smoke import tiny_weights, write_tiny_model
    from edgeq.llamacpp import find_toolchain
    from edgeq.llamacpp.quantize import quantize
    from edgeq.quants import parse_quant

    d = tmp_path_factory.mktemp("tiny")
    f32 = write_tiny_model(d / "tiny-F32.gguf", tiny_weights())
    return quantize(find_toolchain(), f32, d / "tiny-Q8_0.gguf", parse_quant("Q8_0"))


@pytest.fixture
def crashing(crash_shim: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("LD_PRELOAD", str(crash_shim))
    monkeypatch.setenv("EDGEQ_TEST_CRASH_AT", "compute")
    return monkeypatch


def _one_crash_line(err: str, signal: str = "SIGSEGV") -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"Error: llama.cpp crashed ({signal})"), err
    assert "edgeq doctor" in lines[0]


@slow
def test_the_shim_really_crashes_llama_bench(crashing, tiny_q8):
    """The control: the tool itself dies of SIGSEGV under the shim (and runs without it)."""
    from edgeq.llamacpp import find_toolchain

    argv = [str(find_toolchain().tool("llama-bench")), "-m", str(tiny_q8), "-p", "8", "-n", "2", "-r", "1"]
    assert subprocess.run(argv, capture_output=True).returncode == -11
    crashing.delenv("LD_PRELOAD")
    assert subprocess.run(argv, capture_output=True).returncode == 0


@slow
def test_run_crash_is_one_line(crashing, tiny_q8, capsys):
    code, err, _ = run_main(["run", str(tiny_q8), "hello", "-n", "4"], capsys)
    assert code == EXIT_CRASH
    _one_crash_line(err)
    assert "tiny-Q8_0.gguf" in err


@slow
def test_eval_crash_is_one_line_not_a_dead_process(crashing, tiny_q8, capsys, tmp_path):
    code, err, _ = run_main(["eval", "ppl", str(tiny_q8), "--ctx", "64", "--max-tokens", "128",
                             "-o", str(tmp_path / "e.json")], capsys)
    assert code == EXIT_CRASH
    _one_crash_line(err)
    assert "while scoring tiny-Q8_0.gguf" in err
    assert not (tmp_path / "e.json").exists()


@slow
def test_bench_exits_non_zero_when_every_run_crashed(crashing, tiny_q8, capsys, tmp_path):
    out = tmp_path / "b.json"
    code, err, stdout = run_main(["bench", str(tiny_q8), "-p", "8", "-n", "4", "-r", "1", "--batch", "1",
                                  "-o", str(out), "--json"], capsys)
    assert code == EXIT_CRASH
    _one_crash_line(err)
    runs = json.loads(stdout)["runs"]
    assert runs and all(r["status"] == "failed" and r["crash_signal"] == "SIGSEGV" for r in runs)
    assert all("llama.cpp crashed (SIGSEGV) while benchmarking tiny-Q8_0.gguf" in r["reason"] for r in runs)
    assert json.loads(out.read_text())["runs"] == runs  # the results file says the same


@slow
def test_plan_crash_in_a_tool_is_one_line(crashing, tiny_q8, capsys):
    crashing.setenv("EDGEQ_TEST_CRASH_AT", "load")  # llama-fit-params opens the file, computes nothing
    code, err, _ = run_main(["plan", str(tiny_q8)], capsys)
    assert code == EXIT_CRASH
    _one_crash_line(err)
    assert "in llama-fit-params on tiny-Q8_0.gguf" in err


@slow
def test_doctor_names_the_crash_and_fails(crashing, capsys):
    code, _, stdout = run_main(["doctor", "--json"], capsys)
    assert code == 3
    rep = json.loads(stdout)
    bad = [c for c in rep["checks"] if not c["ok"]]
    assert bad and all("llama.cpp crashed (SIGSEGV)" in c["detail"] for c in bad)
    assert {c["name"] for c in bad} == {f"{t} generates ({p})" for t in ("Q8_0", "Q4_K_M", "Q4_0")
                                        for p in ("edgeq", "llama-bench")}
    assert all("EDGEQ_CPU_VARIANT=" in c["fix"] for c in bad)  # the way out: a lower CPU level
    code, err, _ = run_main(["doctor"], capsys)
    assert code == 3 and len(err.strip().splitlines()) == 1 and "SIGSEGV" in err


@pytest.mark.parametrize(("rc", "signal"), [(-11, "SIGSEGV"), (-4, "SIGILL"), (-6, "SIGABRT"), (-7, "SIGBUS")])
def test_crash_signals_become_native_crash(rc, signal):
    err = crash_error(rc, "while testing x.gguf", tail=["load ok", "GGML_ASSERT(ne % 32 == 0) failed", "50%|#####|"])
    assert isinstance(err, NativeCrash) and err.exit_code == EXIT_CRASH and err.signal_name == signal
    assert str(err).startswith(f"llama.cpp crashed ({signal}) while testing x.gguf: ")
    assert "GGML_ASSERT(ne % 32 == 0) failed" in str(err) and "\n" not in str(err)


@pytest.mark.parametrize("rc", [0, 1, 2, -9, -15, None])
def test_exits_that_are_not_crashes(rc):
    assert crash_error(rc, "while testing") is None


def test_a_tool_that_hangs_with_its_output_open_is_stopped_at_its_timeout(tmp_path):
    """The deadline holds while the tool still holds stdout open (reading it would block forever)."""
    import time

    from edgeq.errors import ToolchainError
    from edgeq.llamacpp import run_tool

    tool = tmp_path / "hangs"
    tool.write_text("#!/bin/sh\necho started\nexec sleep 600\n")
    tool.chmod(0o755)
    t0 = time.monotonic()
    with pytest.raises(ToolchainError) as e:
        run_tool([tool], timeout=1.5)
    assert time.monotonic() - t0 < 10
    assert str(e.value).startswith("hangs did not finish within 1.5 s and was stopped.")


def test_a_run_that_exits_before_its_last_line_is_run_again_and_then_refused(tmp_path):
    """llama.cpp's logger can lose a tool's last lines at exit (exit code 0): ``until`` reruns it, then refuses."""
    import re

    from edgeq.errors import ToolchainError
    from edgeq.llamacpp import run_tool

    tool, runs = tmp_path / "summary", tmp_path / "runs"
    # Prints its summary only from its second run on; counts its runs.
    tool.write_text(f'#!/bin/sh\necho x >> "{runs}"\necho "Mean KLD: 0.5"\n'
                    f'[ "$(wc -l < "{runs}")" -ge 2 ] && echo "Same top p: 97.0"\nexit 0\n')
    tool.chmod(0o755)
    lines: list[str] = []
    run_tool([tool], on_line=lines.append, until=re.compile(r"^Same top p:"))
    assert len(runs.read_text().splitlines()) == 2 and lines[-1] == "Same top p: 97.0"
    with pytest.raises(ToolchainError) as e:
        run_tool([tool], until=re.compile(r"^never printed"))
    assert len(runs.read_text().splitlines()) == 2 + 3 and "summary exited 3 times" in str(e.value)
    run_tool([tool])  # without until, one run whatever it printed
    assert len(runs.read_text().splitlines()) == 6


@slow
def test_forced_cpu_level_reaches_the_tools_too(monkeypatch, tiny_q8):
    """EDGEQ_CPU_VARIANT: llama.cpp's tools run from a folder that holds only that level."""
    from edgeq.llamacpp import find_toolchain, json_array, run_tool

    monkeypatch.setenv("EDGEQ_CPU_VARIANT", "x64")
    tc = find_toolchain()
    exe = tc.tool("llama-bench")
    assert exe.parent != tc.bin_dir
    assert sorted(p.name for p in exe.parent.glob("libggml-cpu-*")) == ["libggml-cpu-x64.so"]
    out = run_tool([exe, "-m", tiny_q8, "-p", "8", "-n", "2", "-r", "1", "-o", "json"], tail_lines=400)
    rows = json_array(out)
    assert rows and all(r["avg_ts"] > 0 for r in rows)
    assert any("loaded CPU backend from" in ln and ln.endswith("libggml-cpu-x64.so") for ln in out), list(out)[:5]


@slow
def test_one_scorer_child_loads_files_in_turn_and_one_it_cannot_load_ends_it(tiny_q8, tmp_path):
    """ChildScorer.open: the same child scores the next file (its logits are that file's, as a fresh child gives
    them), and a file it cannot load is one error naming it, after which the child has ended."""
    import numpy as np

    from edgeq.backends.isolated import ChildScorer
    from edgeq.errors import EdgeqError

    f32, bad = tiny_q8.with_name("tiny-F32.gguf"), tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(100))
    ids = [1, 2, 3, 4]
    fresh = ChildScorer("llama.cpp", str(f32), n_ctx=64, threads=1)
    try:
        want = fresh.logits(ids).copy()
    finally:
        fresh.close()
    scorer = ChildScorer("llama.cpp", str(tiny_q8), n_ctx=64, threads=1)
    try:
        q8, pid = scorer.logits(ids).copy(), scorer.proc.pid
        scorer.open(str(f32))
        got = scorer.logits(ids).copy()
        assert scorer.proc.pid == pid and scorer.path == str(f32)
        assert np.array_equal(got, want) and not np.array_equal(got, q8)
        with pytest.raises(EdgeqError, match="bad.gguf"):
            scorer.open(str(bad))
        assert scorer.proc.poll() is not None
    finally:
        scorer.close()
