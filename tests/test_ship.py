"""`edgeq ship` end to end on a tiny Llama served by the Hub stand-in: the deploy folder, its run.sh, reuse of
every measurement by a second target, resumption after an interruption, and a target nothing fits."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hubserver import FakeHub, Repo, User

from edgeq import config
from edgeq.shipping import NothingFits, ship

SOURCE = "edgeq-test/tiny-ship"
TOKEN = "hf_acme_write"
FAST = {"eval_tokens": 2048, "progress": False, "quants": ["Q8_0", "Q4_K_M"]}


@pytest.fixture(scope="module")
def hub(tiny_llama: Path) -> FakeHub:
    h = FakeHub(users={TOKEN: User("acme")}).start()
    files = {p.name: p.read_bytes() for p in tiny_llama.iterdir() if p.is_file()}
    h.repos[SOURCE] = Repo({**files, "README.md": b"---\nlicense: apache-2.0\n---\n"})
    yield h
    h.stop()


@pytest.fixture(scope="module")
def shipped(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    base = tmp_path_factory.mktemp("ship")
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_ENDPOINT", hub.endpoint)
    mp.setenv("HF_HOME", str(base / "hf-home"))
    try:
        res = ship(SOURCE, workdir=base / "work", outdir=base / "dist", **FAST)
    finally:
        mp.undo()
    return base, res


def _env(hub: FakeHub, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HOME", str(base / "hf-home"))


@pytest.mark.slow
def test_ship_writes_a_verified_deploy_folder_whose_run_sh_generates(shipped):
    from huggingface_hub import ModelCard

    base, res = shipped
    dist = base / "dist"
    chosen = next(o for o in res.options if o.label == res.chosen)
    assert {o.label for o in res.options} == {"F16", "Q8_0", "Q4_K_M-imat"}
    assert sorted(p.name for p in dist.glob("*.gguf")) == [Path(chosen.file).name]
    for name in ("edgeq-manifest.json", "README.md", "run.sh", "ship.json", "report/report.md", "results/eval.json",
                 "results/bench.json", "results/plan.json"):
        assert (dist / name).is_file(), name
    assert json.loads((dist / "edgeq-manifest.json").read_text())["files"].keys() == {Path(chosen.file).name}
    card = ModelCard((dist / "README.md").read_text())
    assert card.data.base_model == SOURCE and card.data.license == "apache-2.0"
    from edgeq.output import md_text  # the card holds the sentence as literal Markdown

    assert "## Recommended" in card.text and md_text(res.sentence) in card.text and "measured here" in card.text
    # The pick follows the documented rule (speed by default): it fits and keeps to the near-lossless bound, and
    # nothing else that fits and keeps to it generates faster beyond the measured noise (issue 33).
    kld = {o.label: (0.0 if o.label == "F16" else o.kld_mean) for o in res.options}
    assert chosen.fits and res.prefer == "speed" and res.kld_bound and kld[res.chosen] <= res.kld_bound
    assert chosen.tg_high_target is not None and chosen.dominated_by is None
    assert not [o for o in res.options if o.fits and kld[o.label] <= res.kld_bound
                and (o.tg_low_target or o.tg_tps_target) > chosen.tg_high_target]
    assert res.runner_up and res.runner_up != res.chosen
    assert "no tuned file" in " ".join(res.notes)  # this machine's RAM holds the widest candidate already
    env = {**os.environ, "LLAMA_COMPLETION": str(config.bin_dir() / "llama-completion"), "N_PREDICT": "8"}
    out = subprocess.run([str(dist / "run.sh"), "Once upon a time"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip()


@pytest.mark.slow
def test_a_second_target_reuses_every_measurement_and_push_publishes_the_folder(shipped, hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the stand-in speaks plain LFS
    base, first = shipped
    _env(hub, base, monkeypatch)
    cached = {p: p.stat().st_mtime_ns for p in (base / "work" / "ship").iterdir()}
    res = ship(SOURCE, target="pi5-8gb", workdir=base / "work", outdir=base / "dist-pi5", push="acme/tiny-GGUF",
               token=TOKEN, **FAST)
    # Not one measurement made again: the quality and speed results are the first target's files, untouched.
    assert {p: p.stat().st_mtime_ns for p in (base / "work" / "ship").iterdir()} == cached
    assert res.target["name"] == "pi5-8gb" and not res.target["here"]
    assert all(not o.tg_measured for o in res.options) and any("predicted" in n for n in res.notes)
    assert "pi5-8gb" in (base / "dist-pi5" / "README.md").read_text()
    # The Pi 5 is aarch64: the folder carries llama.cpp built for it, recorded and verified with the model.
    from edgeq.llamacpp import cross
    from edgeq.manifest import verify

    mf = json.loads((base / "dist-pi5" / "edgeq-manifest.json").read_text())
    assert mf["options"]["bundle"]["arch"] == "aarch64" and "libggml-cpu-armv8.2_2.so" in mf["options"]["bundle"]["files"]
    assert cross.elf_machine(base / "dist-pi5" / "bin" / "llama-completion") == "EM_AARCH64"
    assert verify(base / "dist-pi5").passed and "bin/llama-completion" in verify(base / "dist-pi5").ok
    assert not (base / "dist" / "bin").exists()  # this machine's own folder: its tools are on PATH
    published = hub.repos["acme/tiny-GGUF"].files
    assert res.pushed and published[Path(next(o.file for o in res.options if o.label == res.chosen)).name]
    card = published["README.md"].decode()
    assert "## Recommended" in card and "pi5-8gb" in card and "llama-cli -hf acme/tiny-GGUF:" in card


@pytest.mark.slow
# Two boundaries: after the quality stage (the conversions and KLDs made) and at the very end (every measurement
# made); an interruption at any stage between them leaves a subset of the second's files, all kept the same way.
@pytest.mark.parametrize("stage", ["_speed", "write_folder"])
def test_an_interrupted_ship_resumes_with_what_it_had_measured(shipped, hub, monkeypatch, stage):
    import edgeq.shipping as ship_module
    base, _ = shipped
    _env(hub, base, monkeypatch)
    work = base / f"work-{stage}"
    real = getattr(ship_module, stage)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ship_module, stage, interrupted)
    with pytest.raises(KeyboardInterrupt):
        ship(SOURCE, workdir=work, outdir=base / f"dist-{stage}", **FAST)
    before = {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file() and p.suffix in (".gguf", ".json")}
    monkeypatch.setattr(ship_module, stage, real)
    res = ship(SOURCE, workdir=work, outdir=base / f"dist-{stage}", **FAST)
    after = {p: p.stat().st_mtime_ns for p in before}
    kept = [p for p in before if p.name != "edgeq-manifest.json" and p.parent.name != ".edgeq-upload"]
    assert all(after[p] == before[p] for p in kept)  # nothing made before the interruption was made again
    assert res.chosen


@pytest.mark.slow
def test_a_target_nothing_fits_ends_with_the_closest_option(shipped, hub, monkeypatch, capsys):
    from conftest import run_main

    base, _ = shipped
    _env(hub, base, monkeypatch)
    with pytest.raises(NothingFits) as e:
        ship(SOURCE, workdir=base / "work", outdir=base / "dist-none", min_tps=1e9, **FAST)
    assert "closest" in str(e.value).lower() and e.value.exit_code == 1
    assert not (base / "dist-none").exists()
    code, err, _ = run_main(["ship", SOURCE, "--work", str(base / "work"), "-o", str(base / "dist-none"),
                             "--quants", "Q8_0,Q4_K_M", "--eval-tokens", "2048", "--min-tps", "1e9"], capsys)
    assert code == 1 and "closest" in err.lower() and len(err.strip().splitlines()) == 1
