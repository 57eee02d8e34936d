"""The Apple Silicon path, with the platform simulated: no Mac runs here (CI's macOS job runs the real one).

The decisions are pure functions of the platform (``compute.choose``, ``planning.devices.metal_budget``,
``bundling.host.refusal``); the engines are the real ones, handed a device resolved as on a Mac.  On this
CPU-only build llama.cpp accepts every layer for offload and says so in its load log ("offloaded 3/3 layers"),
so the layers that reach llama.cpp are read from llama.cpp's own words.
"""
from __future__ import annotations

import platform
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeq import compute
from edgeq.errors import UsageError

MAC = ("Darwin", "arm64")


@pytest.mark.parametrize("system, machine, asked, device, layers", [
    ("Darwin", "arm64", "auto", "metal", compute.ALL_LAYERS),
    ("Darwin", "arm64", "cpu", "cpu", 0),
    ("Darwin", "arm64", "metal", "metal", compute.ALL_LAYERS),
    ("Darwin", "x86_64", "auto", "cpu", 0),  # an Intel Mac: no Metal build
    ("Linux", "x86_64", "auto", "cpu", 0),
    ("Linux", "aarch64", "auto", "cpu", 0),  # a Pi 5: ARM, not Apple
    ("Linux", "x86_64", "CPU", "cpu", 0),
])
def test_the_device_is_one_decision_of_the_platform(system, machine, asked, device, layers):
    on = compute.choose(asked, system=system, machine=machine)
    assert (on.device, on.n_gpu_layers) == (device, layers)
    assert on.op_offload == (device == "metal")


@pytest.mark.parametrize("system, machine, asked, message", [
    ("Linux", "x86_64", "metal", "--device metal needs an Apple Silicon Mac; this is Linux x86_64."),
    ("Darwin", "x86_64", "metal", "this is Darwin x86_64"),
    ("Darwin", "arm64", "cuda", "unknown --device 'cuda'."),
])
def test_a_device_the_platform_lacks_is_one_line(system, machine, asked, message):
    with pytest.raises(UsageError) as e:
        compute.choose(asked, system=system, machine=machine)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_llama_cpp_tools_get_the_same_layers_as_edgeq():
    from edgeq.benchmarking.llama_bench import llama_bench_args

    metal, cpu = compute.choose("auto", system="Darwin", machine="arm64"), compute.choose("cpu", system="Darwin",
                                                                                            machine="arm64")
    assert metal.tool_args("llama-perplexity") == ["-ngl", "999"]
    # The tools' own default on a Mac offloads every layer: a CPU check must say 0 and keep batches off the GPU.
    assert cpu.tool_args("llama-perplexity") == ["-ngl", "0", "--no-op-offload"]
    assert cpu.tool_args("llama-bench") == ["-ngl", "0", "-nopo", "1"]
    args = llama_bench_args("m.gguf", threads=4, reps=1, device="metal")
    assert args[args.index("-ngl") + 1] == "999" and "-nopo" not in args
    args = llama_bench_args("m.gguf", threads=4, reps=1, device="cpu")
    assert args[args.index("-ngl") + 1] == "0" and args[args.index("-nopo") + 1] == "1"


def test_the_metal_budget_is_the_gpu_working_set_from_llama_cpp():
    from edgeq.llamacpp import parse_device_list
    from edgeq.planning.devices import metal_budget, named

    # llama-bench --list-devices on a 16 GB M1 (ggml-metal reports recommendedMaxWorkingSetSize as total and free).
    out = ["load_backend: loaded RPC backend from /x/libggml-rpc.so", "Available devices:",
           "  MTL0: Apple M1 (10922 MiB, 10922 MiB free)"]
    reports = parse_device_list(out)
    assert [(r.name, r.description, r.total_bytes, r.metal) for r in reports] == [
        ("MTL0", "Apple M1", 10922 * 2**20, True)]
    got, source = metal_budget(reports, 14 * 2**30)
    assert got == 10922 * 2**20 and "recommendedMaxWorkingSetSize" in source
    assert metal_budget(reports, 4 * 2**30)[0] == 4 * 2**30  # never more than is free now
    assert metal_budget(parse_device_list(["Available devices:", "  (none)"]), 2**30) is None
    # The table's M1 entries: the working set, with a source for every figure.
    for name in ("m1-8gb", "m1-16gb"):
        d = named(name)
        assert d.backend == "metal" and d.usable_ram_bytes < d.ram_bytes * 0.7
        assert {"usable_ram_bytes", "bandwidth_gbps", "ram_bytes"} <= set(d.sources)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """doctor's 2-layer model (2 MiB, byte-level vocabulary): the cheapest GGUF llama.cpp really runs."""
    from edgeq.diagnosis.smoke import tiny_weights, write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("apple") / "tiny-F32.gguf", tiny_weights())


@pytest.fixture
def on_a_mac(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process believes it is an Apple Silicon Mac (the children edgeq starts are handed the device)."""
    monkeypatch.setattr(platform, "system", lambda: MAC[0])
    monkeypatch.setattr(platform, "machine", lambda: MAC[1])


@pytest.fixture
def on_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process believes it is an x86-64 Linux machine (CI's macOS job runs these tests on a real Mac)."""
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")


def test_run_on_a_simulated_mac_offloads_every_layer(tiny, on_a_mac):
    import edgeq

    res = edgeq.run(tiny, "hello", n_predict=2, threads=1)
    assert res.device == "metal" and res.offloaded_layers == res.n_layer + 1  # llama.cpp's count
    assert edgeq.run(tiny, "hello", n_predict=2, threads=1, device="cpu").offloaded_layers == 0


def test_eval_on_a_simulated_mac_scores_with_every_layer_offloaded(tiny, on_a_mac, monkeypatch, tmp_path):
    import edgeq
    from edgeq.backends.isolated import ChildScorer
    from edgeq.quality import models

    told: list[int | None] = []

    class Spy(ChildScorer):  # the real child scorer; its load's offload count, as llama.cpp logged it, kept
        def __init__(self, *a, **k) -> None:
            super().__init__(*a, **k)
            told.append(self.offloaded_layers)

    monkeypatch.setattr(models, "ChildScorer", Spy)
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog " * 20)
    res = edgeq.evaluate([str(tiny)], text=text, ctx=64, max_tokens=128, threads=1)
    assert res.device == "metal" and told and set(told) == {3}  # 2 layers + output (run's test has the CPU's 0)


def test_doctor_probe_on_a_simulated_mac(tiny):
    from edgeq.diagnosis.smoke import probe

    out = probe(tiny, threads=1, device=compute.choose(system=MAC[0], machine=MAC[1]).device)
    assert out["device"] == "metal" and out["offloaded_layers"] == 3


@pytest.mark.parametrize("verb, args, target, key", [
    ("run", ["M.gguf", "hi"], "edgeq.cli.run.run_model", "device"),
    ("eval", ["ppl"], "edgeq.quality.evaluate", "device"),
    ("tune", ["--size", "1G"], "edgeq.cli.tune.run_tune", "compute_device"),
    ("ship", [], "edgeq.cli.ship.run_ship", "device"),
    ("doctor", [], "edgeq.cli.models.run_doctor", None),
])
def test_every_verb_takes_device_the_same_way(monkeypatch, verb, args, target, key):
    from edgeq.cli import cli

    seen: list[object] = []

    def library(*a, **k):
        seen.append(k[key] if key else a[0])
        raise UsageError("stop here")

    monkeypatch.setattr(target, library)
    res = CliRunner().invoke(cli, [verb, *args, "--device", "metal"])
    assert seen == ["metal"], res.output
    res = CliRunner().invoke(cli, [verb, *args, "--device", "gpu"])
    assert res.exit_code == 2 and "'gpu' is not auto, cpu or metal" in res.output


def test_tune_says_where_the_device_to_fit_went():
    from edgeq.cli import cli

    res = CliRunner().invoke(cli, ["tune", "--device", "m1-8gb"])
    assert res.exit_code == 2 and "--for NAME" in res.output


def test_library_verbs_refuse_metal_off_a_mac(on_linux):
    import edgeq

    with pytest.raises(UsageError, match="needs an Apple Silicon Mac"):
        edgeq.tune(None, size="1GiB", compute_device="metal")


# As on macOS: no PR_SET_PDEATHSIG, so the watchdog must see that the child dies with edgeq.
_EDGEQ_WITHOUT_PDEATHSIG = r"""
from edgeq.llamacpp import process
process._PRCTL = None
process.run_tool(["sh", "-c", "echo $$; exec sleep 60"], on_line=lambda line: print(line, flush=True))
"""


def _gone(pid: int, within_s: float) -> bool:
    import time

    import psutil

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:  # dead, waiting for init to reap it
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_a_tool_dies_with_a_killed_edgeq_without_pdeathsig():
    import os
    import signal
    import subprocess
    import sys

    edgeq = subprocess.Popen([sys.executable, "-c", _EDGEQ_WITHOUT_PDEATHSIG], stdout=subprocess.PIPE, text=True)
    try:
        child = int(edgeq.stdout.readline())
        assert not _gone(child, 0.2)  # the tool runs while edgeq does
        os.kill(edgeq.pid, signal.SIGKILL)
        edgeq.wait()
        assert _gone(child, 10), "the tool outlived a SIGKILLed edgeq"
    finally:
        edgeq.kill()
        edgeq.wait()


def test_the_watchdog_kills_what_is_still_registered_at_end_of_file():
    import subprocess

    from edgeq.llamacpp.watchdog import serve

    kept = subprocess.Popen(["sleep", "60"], start_new_session=True)
    reaped = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        assert serve([f"+{kept.pid}\n".encode(), f"+{reaped.pid}\n".encode(), f"-{reaped.pid}\n".encode(),
                      b"noise\n"]) == {kept.pid}
        assert kept.wait(timeout=5) == -9 and reaped.poll() is None  # a released group is left alone
    finally:
        reaped.kill()
        reaped.wait()


@pytest.mark.parametrize("system, machine, refused", [
    ("Darwin", "arm64", True), ("Darwin", "x86_64", True), ("Windows", "AMD64", True),
    ("Linux", "x86_64", False), ("Linux", "aarch64", False),
])
def test_arm_bundles_are_refused_off_linux_in_one_line_naming_the_needs(system, machine, refused):
    from edgeq.llamacpp.cross import host_refusal, target

    why = host_refusal(target("aarch64"), system, machine)
    assert (why is not None) == refused
    if why:
        assert "\n" not in why and f"this is {system} {machine}" in why
        assert "aarch64-linux-gnu-g++" in why and "qemu-aarch64" in why and "Linux container" in why


def test_bundle_and_ship_for_a_board_refuse_on_a_simulated_mac_before_any_work(on_a_mac, tiny, tmp_path, capsys):
    from conftest import run_main

    out = tmp_path / "never"
    code, err, _ = run_main(["bundle", str(tiny), "-o", str(out)], capsys)
    assert code == 3 and "aarch64 Linux bundles are built on Linux only (this is Darwin arm64)" in err
    assert len(err.splitlines()) == 1 and not out.exists()
    code, err, _ = run_main(["ship", str(tiny), "--for", "pi5-8gb", "-o", str(out)], capsys)
    assert code == 3 and "built on Linux only" in err and not out.exists()


def _logits_agree():
    import importlib.util

    spec = importlib.util.spec_from_file_location("logits_agree", Path(__file__).resolve().parent.parent / "scripts"
                                                  / "logits_agree.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_logits_check_ci_runs_on_metal_agrees_cpu_with_cpu_and_can_fail(tiny, capsys, monkeypatch):
    """scripts/logits_agree.py: CI's macOS job runs it metal against cpu; here cpu against cpu must agree exactly,
    and logits that differ as a wrong kernel's would must not."""
    import json

    import numpy as np

    check = _logits_agree()
    assert check.main([str(tiny), "--devices", "cpu,cpu", "--tokens", "64", "--threads", "1", "--json"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["agree"] and same["kld_mean"] == 0 and same["top1_pct"] == 100 and same["devices"] == ["cpu", "cpu"]
    a = np.random.default_rng(0).standard_normal((64, 512)).astype(np.float32)
    off = check.compare(a, a * 1.5)  # every logit scaled: the top-1 token stays, the distributions do not
    assert off["top1_pct"] == 100 and off["kld_mean"] > check.MAX_KLD
    assert check.compare(a, a)["kld_mean"] == 0
    monkeypatch.setattr(platform, "system", lambda: "Linux")  # no Mac (CI's macOS job runs this test too)
    assert check.main([str(tiny), "--devices", "metal,cpu"]) == 2
    assert "needs an Apple Silicon Mac" in capsys.readouterr().err


def test_the_bandwidth_kernel_reads_with_every_thread_asked_and_no_openmp():
    """edgeq-bandwidth on POSIX threads (Apple's clang has no OpenMP): it says how many threads read in every pass."""
    import json
    import subprocess
    import sys

    from edgeq.llamacpp import find_toolchain

    exe = find_toolchain().bin_dir / "edgeq-bandwidth"
    for threads in (1, 3):  # 3: more than this machine's 2 cores, and not a power of two
        out = json.loads(subprocess.run([exe, "64", "1", str(threads)], capture_output=True, text=True,
                                        check=True).stdout)
        assert out["threads"] == threads and out["threads_ran"] == threads and out["check"] == 1
    if sys.platform == "darwin":  # a Mach-O binary: its libraries as otool lists them
        needed = subprocess.run(["otool", "-L", str(exe)], capture_output=True, text=True, check=True).stdout.split()
    else:
        from elftools.elf.dynamic import DynamicSection
        from elftools.elf.elffile import ELFFile

        with open(exe, "rb") as f:
            needed = [t.needed for s in ELFFile(f).iter_sections() if isinstance(s, DynamicSection)
                      for t in s.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
    assert needed and not [n for n in needed if "omp" in n], needed  # no libgomp / libomp
