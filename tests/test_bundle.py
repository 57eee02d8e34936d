"""`edgeq bundle`: llama.cpp cross-built for aarch64 beside a GGUF, and proof under qemu that each of its CPU
levels computes what this machine's build computes (greedy text, logits), locally and as an RPC server."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from edgeq.llamacpp import cross

slow = pytest.mark.slow


# ---- without the cross build --------------------------------------------------------------------------------

def test_a_missing_model_is_one_line_and_exit_2(tmp_path, capsys):
    from conftest import run_main

    code, err, out = run_main(["bundle", str(tmp_path / "nope.gguf")], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "nope.gguf" in err and not out
    assert not (tmp_path / "dist").exists()


def test_an_unknown_architecture_names_the_known_ones(tmp_path, capsys):
    from conftest import run_main, write_small_gguf

    model = write_small_gguf(tmp_path / "m.gguf", name="m", add_bos=True)
    code, err, _ = run_main(["bundle", str(model), "--arch", "riscv64", "-o", str(tmp_path / "b")], capsys)
    assert code == 2 and "riscv64" in err and "aarch64" in err and len(err.splitlines()) == 1  # a usage error (issue 32)
    assert not (tmp_path / "b").exists()


def test_without_the_cross_compiler_it_says_what_to_install(tmp_path, monkeypatch, capsys):
    from conftest import run_main, write_small_gguf

    model = write_small_gguf(tmp_path / "m.gguf", name="m", add_bos=True)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no aarch64-linux-gnu-g++, no qemu
    code, err, _ = run_main(["bundle", str(model), "-o", str(tmp_path / "b")], capsys)
    assert code == 3 and "apt-get install g++-aarch64-linux-gnu qemu-user" in err and len(err.splitlines()) == 1


def test_run_sh_prefers_the_bundled_binary_and_falls_back_to_path(tmp_path):
    from edgeq.bundling import write_run_sh

    fake = "#!/bin/sh\necho \"$0 $*\"\n"
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "llama-completion").write_text(fake)
    (tmp_path / "bin" / "llama-completion").chmod(0o755)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "llama-completion").write_text(fake.replace("$0", "PATH's"))
    (tmp_path / "elsewhere" / "llama-completion").chmod(0o755)
    write_run_sh(tmp_path / "run.sh", "M it's.gguf", ctx=2048, threads=4)
    env = {**os.environ, "PATH": f"{tmp_path / 'elsewhere'}:{os.environ['PATH']}"}
    out = subprocess.run([str(tmp_path / "run.sh"), "Hi there"], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.startswith(str(tmp_path / "bin" / "llama-completion"))
    assert f"-m {tmp_path}/M it's.gguf -c 2048 -t 4" in out.stdout and out.stdout.rstrip().endswith("-p Hi there")
    (tmp_path / "bin" / "llama-completion").unlink()
    out = subprocess.run([str(tmp_path / "run.sh")], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.startswith("PATH's") and out.stdout.rstrip().endswith("-p Hello")


def test_elf_facts_are_read_from_the_files(tmp_path):
    from edgeq.llamacpp import find_toolchain

    exe = find_toolchain().bin_dir / "llama-completion"
    assert cross.elf_machine(exe) == "EM_X86_64" or os.uname().machine != "x86_64"
    assert "libc.so.6" in cross.needed(exe) or any(n.startswith("libllama") for n in cross.needed(exe))
    assert cross._version_key(cross.version_needed(exe, "GLIBC_")) >= (2, 2)
    assert cross.loaded_level(["x", "load_backend: loaded CPU backend from /b/libggml-cpu-armv8.2_2.so"]) == "armv8.2_2"
    assert cross.loaded_level(["nothing here"]) is None


# ---- with it (cold: minutes; from the build cache or ccache: seconds) -------------------------------------------
#
# Under qemu a CPU runs many times slower than here, so these checks use a tiny Llama (hidden 256: every K-quant
# block fits, so Q4_K_M is Q4_K-family throughout) with peaked logits: the check is of arithmetic, and a wrong
# kernel cannot hide in near-uniform noise.  Peaked, not spiky: with much larger weights another order of sums
# alone moves Q4_K_M's KLD past bundle's floor (MAX_KLD_FLOOR), and the check would fail a correct board.  Every
# CPU level runs Q4_K_M; Q8_0 (with RPC) and Q4_0 (with the control) run at one level each.  The embedded model
# at every level and quant is `benchmarks/arm.py`'s matrix (results in benchmarks/results/arm.*).

QUANTS = ("Q8_0", "Q4_0", "Q4_K_M")


@pytest.fixture(scope="session")
def aarch64_build():
    return cross.build("aarch64")


@pytest.fixture(scope="session")
def peaked(tmp_path_factory, embedded_checkpoint) -> dict[str, Path]:
    """The tiny peaked Llama as Q8_0, Q4_0 and Q4_K_M."""
    from conftest import make_tiny_checkpoint

    from edgeq.conversion import convert

    base = tmp_path_factory.mktemp("peaked")
    ck = make_tiny_checkpoint(base / "tiny-peaked", embedded_checkpoint, initializer_range=0.1)
    res = convert(str(ck), quants=list(QUANTS), outdir=base / "out", progress=False)
    return {o.variant: Path(o.path) for o in res.outputs if o.variant in QUANTS}


@pytest.fixture(scope="session")
def bounds(peaked):
    """Each file's envelope (this machine's own CPU levels against each other), measured once per file."""
    from edgeq.bundling.check import CHECK_CHARS, envelope
    from edgeq.sources.texts import default_text

    made: dict[str, object] = {}

    def of(quant: str):
        if quant not in made:
            made[quant] = envelope(peaked[quant], default_text()[0][:CHECK_CHARS], 2)
        return made[quant]

    return of


@slow
def test_the_cross_build_has_every_level_and_the_bundle_is_whole_aarch64_and_verified(aarch64_build, peaked,
                                                                                       tmp_path, capsys):
    from conftest import run_main

    from edgeq.manifest import verify

    q4_0 = peaked["Q4_0"]
    assert cross.cpu_variants(aarch64_build) == sorted(cross.AARCH64.levels)
    out = tmp_path / "pi"
    code, err, stdout = run_main(["bundle", str(q4_0), "-o", str(out), "--json"], capsys)
    assert code == 0, err
    res = json.loads(stdout)
    bins = sorted(p.name for p in (out / "bin").iterdir())
    assert bins == res["binaries"] and not any((out / "bin" / b).is_symlink() for b in bins)
    for tool in cross.DEPLOY_TOOLS:
        assert tool in bins
    assert {f"libggml-cpu-{v}.so" for v in cross.AARCH64.levels} <= set(bins) and "libgomp.so.1" in bins
    assert all(cross.elf_machine(out / "bin" / b) == "EM_AARCH64" for b in bins)
    # Everything a binary asks for is in bin/, except glibc's own libraries and GCC's C++ runtime.
    system = {"libc.so.6", "libm.so.6", "ld-linux-aarch64.so.1", "libpthread.so.0", "libdl.so.2", "libstdc++.so.6",
              "libgcc_s.so.1"}
    assert {n for b in bins for n in cross.needed(out / "bin" / b)} - set(bins) <= system
    assert res["glibc_min"] == "2.34" and res["glibcxx_min"].startswith("3.4.")  # Debian 12, Ubuntu 22.04 and up
    mf = json.loads((out / "edgeq-manifest.json").read_text())
    assert mf["options"]["bundle"]["arch"] == "aarch64" and mf["options"]["bundle"]["glibc_min"] == res["glibc_min"]
    assert [lv["name"] for lv in mf["options"]["bundle"]["levels"]] == res["levels"]
    assert (out / q4_0.name).samefile(q4_0) or (out / q4_0.name).read_bytes() == q4_0.read_bytes()
    assert verify(out).passed
    # A damaged binary is caught by `edgeq verify`, named under bin/.
    lib = out / "bin" / "libllama.so.0"
    data = bytearray(lib.read_bytes())
    data[len(data) // 2] ^= 0xFF
    lib.write_bytes(bytes(data))
    assert "bin/libllama.so.0" in verify(out).mismatched
    # A second bundle rewrites bin/ whole (and is quick: nothing to build).
    code, err, _ = run_main(["bundle", str(q4_0), "-o", str(out)], capsys)
    assert code == 0 and verify(out).passed


def _holds(c, env) -> None:
    assert c.loaded_level == c.level  # the emulated CPU got the level it has
    assert c.text_here.strip() and c.text_target.strip()
    assert c.kld_mean is not None and c.top1_pct is not None
    assert c.kld_mean <= env.max_kld_mean and c.top1_pct >= env.min_top1_pct, c
    assert c.passed


@slow
def test_bundle_check_runs_every_cpu_level_under_qemu_and_each_computes_what_this_machine_does(aarch64_build, peaked,
                                                                                              tmp_path):
    """Q4_K_M (ggml's most involved kernels) through `bundle --check`: greedy text, top-1 and KLD at every level."""
    from edgeq.bundling import bundle

    res = bundle(peaked["Q4_K_M"], outdir=tmp_path / "b", check=True, n_predict=24, threads=2)
    assert [c.level for c in res.checks] == sorted(cross.AARCH64.levels)
    env = res.envelope  # this machine's own CPU levels against each other: what another order of sums does
    assert env.level is not None and env.max_kld_mean <= 0.02 and env.min_top1_pct >= 85, env
    for c in res.checks:
        _holds(c, env)


@slow
def test_q4_0_on_the_board_holds_and_a_real_difference_is_far_outside_the_bounds(aarch64_build, peaked, bounds,
                                                                                tmp_path):
    """Q4_0 at the baseline level; the control: the board's Q4_0 scored against the Q8_0 file's logits is caught by
    Q4_0's own bounds."""
    from edgeq.bundling import bundle, check_folder
    from edgeq.bundling.check import CHECK_CHARS, CHECK_CTX, CHECK_WINDOWS
    from edgeq.quality.crosscheck import llama_perplexity_kld
    from edgeq.sources.texts import default_text

    q4_0, q8 = peaked["Q4_0"], peaked["Q8_0"]
    bundle(q4_0, outdir=tmp_path / "b")
    env, [c] = check_folder(tmp_path / "b", levels=["armv8.0_1"], n_predict=24, threads=2, bounds=bounds("Q4_0"))
    _holds(c, env)
    text = default_text()[0][:CHECK_CHARS]
    wrong = llama_perplexity_kld(q8, q4_0, text, ctx=CHECK_CTX, windows=CHECK_WINDOWS, threads=2,
                                 model_tool=[*cross.emulator(cross.AARCH64, "armv8.2_2"),
                                             tmp_path / "b" / "bin" / "llama-perplexity"])
    assert wrong["kld_mean"] > 3 * env.max_kld_mean, (wrong, env)


@slow
def test_an_emulated_aarch64_rpc_server_computes_for_this_machines_client_what_the_board_computes(aarch64_build, peaked,
                                                                                bounds, tmp_path):
    from edgeq.bundling import bundle, check_folder

    bundle(peaked["Q8_0"], outdir=tmp_path / "b")
    env, [local, rpc] = check_folder(tmp_path / "b", local=True, rpc=True, levels=["armv8.2_2"], n_predict=24,
                                     threads=2, bounds=bounds("Q8_0"))
    assert rpc.what == "rpc" and rpc.loaded_level == "armv8.2_2"  # the server ran on the emulated Cortex-A76
    # The protocol changes nothing: the text is exactly the board's own with the kernels its server has (weights
    # not repacked), and the logits sit within this machine's own spread, as the board's local run's do.
    assert rpc.same_as_board, (rpc.text_target, local.text_target)
    assert rpc.kld_mean <= env.max_kld_mean and rpc.top1_pct >= env.min_top1_pct
    _holds(local, env)
    assert rpc.passed
