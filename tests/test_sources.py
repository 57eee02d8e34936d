"""A repo id means one thing to every verb: downloaded once, converted once, named as `edgeq convert` names it."""
from __future__ import annotations

import json

import pytest
from conftest import run_main
from hubserver import Repo

from edgeq.manifest import load as load_manifest

pytestmark = pytest.mark.slow


@pytest.fixture
def private_repo(tiny_llama, fake_hub, monkeypatch) -> Repo:
    files = {p.name: p.read_bytes() for p in tiny_llama.iterdir() if p.is_file()}
    repo = fake_hub.repos["acme/smol"] = Repo(files, private=True)
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    return repo


def _file_downloads(hub) -> int:
    return sum(1 for method, path, _ in hub.requests if method == "GET" and "/resolve/" in path)


def test_bench_and_eval_reuse_what_convert_made_from_a_repo_id(private_repo, fake_hub, tmp_path, capsys):
    token = ["--token", private_repo.token]
    code, err, _ = run_main(["convert", "acme/smol", "--q8", "--json", *token], capsys)
    assert code == 0, err
    downloaded = _file_downloads(fake_hub)
    assert downloaded >= len(private_repo.files) - 1
    q8 = tmp_path / "models" / "smol" / "smol-Q8_0.gguf"
    made = q8.stat().st_mtime_ns

    code, err, out = run_main(["eval", "ppl", "acme/smol", "--quants", "Q8_0", "--ctx", "64", "--max-tokens", "128",
                               "--revision", private_repo.commit, "-o", str(tmp_path / "e.json"), "--json", *token],
                              capsys)
    assert code == 0, err
    rows = {r["model"]["backend"]: r["model"] for r in json.loads(out)["rows"]}
    assert rows["llama.cpp"]["path"] == str(q8) and rows["llama.cpp"]["name"] == "smol"

    code, err, out = run_main(["bench", "acme/smol", "--quants", "Q8_0", "--hf", "", "-p", "8", "-n", "4", "-r", "1",
                               "--batch", "1", "-o", str(tmp_path / "b.json"), "--json", *token], capsys)
    assert code == 0, err
    assert {r["path"] for r in json.loads(out)["runs"] if r["backend"] == "llama.cpp"} == {str(q8)}

    assert _file_downloads(fake_hub) == downloaded  # nothing fetched twice (plan reads headers by range requests)

    code, err, out = run_main(["plan", "acme/smol", "--quants", "Q8_0,Q4_K_M", "--ctx", "256", "--json", *token], capsys)
    assert code == 0, err
    plan = json.loads(out)
    q8_row = next(r for r in plan["rows"] if r["quant"] == "Q8_0")
    assert q8_row["file_size_measured_bytes"] == q8.stat().st_size  # the file convert made, measured
    assert next(r for r in plan["rows"] if r["quant"] == "Q4_K_M")["file_size_measured_bytes"] is None
    assert {f["quant"] for f in plan["fit_params"]} == {"Q8_0"}  # llama-fit-params ran on that file

    assert q8.stat().st_mtime_ns == made  # reused, not made again
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["smol"]  # no folder named by the commit hash
    mf = load_manifest(q8.parent)
    assert mf.source["kind"] == "hub" and mf.source["repo_id"] == "acme/smol"
    assert mf.source["revision"] == private_repo.commit


def test_a_private_repo_without_the_token_is_one_line(private_repo, capsys):
    code, err, _ = run_main(["bench", "acme/smol", "--quants", "Q8_0", "--hf", ""], capsys)
    assert code == 1 and len(err.splitlines()) == 1 and "acme/smol" in err
