"""A repo id means one thing to every verb: downloaded once, converted once, named as `edgeq convert` names it."""
from __future__ import annotations

import json

import pytest
from conftest import run_main
from hubserver import Repo

from edgeq.manifest import load as load_manifest


@pytest.fixture
def private_repo(tiny_llama, fake_hub, monkeypatch) -> Repo:
    files = {p.name: p.read_bytes() for p in tiny_llama.iterdir() if p.is_file()}
    repo = fake_hub.repos["acme/smol"] = Repo(files, private=True)
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    return repo


def _file_downloads(hub) -> int:
    return sum(1 for method, path, _ in hub.requests if method == "GET" and "/resolve/" in path)


@pytest.mark.slow
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
    # ...and predicted to the byte from range-requested headers alone (the converter run on sparse stand-ins)
    assert q8_row["file_size_bytes"] == q8.stat().st_size
    assert next(r for r in plan["rows"] if r["quant"] == "Q4_K_M")["file_size_measured_bytes"] is None
    assert {f["quant"] for f in plan["fit_params"]} == {"Q8_0"}  # llama-fit-params ran on that file

    assert q8.stat().st_mtime_ns == made  # reused, not made again
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["smol"]  # no folder named by the commit hash
    mf = load_manifest(q8.parent)
    assert mf.source["kind"] == "hub" and mf.source["repo_id"] == "acme/smol"
    assert mf.source["revision"] == private_repo.commit


@pytest.mark.slow
def test_a_private_repo_without_the_token_is_one_line(private_repo, capsys):
    code, err, _ = run_main(["bench", "acme/smol", "--quants", "Q8_0", "--hf", ""], capsys)
    assert code == 1 and len(err.splitlines()) == 1 and "acme/smol" in err


# --- sources.resolve: the one answer to "what does this MODEL argument name" ------------------------


def test_resolve_names_every_kind_once(tmp_path, monkeypatch):
    from conftest import write_minimal_checkpoint, write_small_gguf

    from edgeq.sources import resolve

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ggufs").mkdir()
    gguf = write_small_gguf(tmp_path / "ggufs" / "smol-Q8_0.gguf", name="smol", add_bos=True)
    ck = write_minimal_checkpoint(tmp_path / "My Model")
    src = resolve(str(gguf))
    assert (src.kind, src.name, src.ggufs(), src.is_checkpoint) == ("gguf", "smol", [gguf], False)
    assert resolve(str(tmp_path / "ggufs")).kind == "gguf-folder"
    local = resolve(str(ck))
    assert (local.kind, local.name, local.path, local.is_checkpoint) == ("local", "My-Model", ck, True)
    assert local.record() == {"kind": "local", "path": str(ck), "fingerprint": local.fingerprint}
    # One rule for a folder holding both: it is the checkpoint (every verb agrees).
    write_small_gguf(ck / "extra-F16.gguf", name="extra", add_bos=True)
    assert resolve(str(ck)).kind == "local"
    # The fingerprint follows the files, so a changed checkpoint is not mistaken for the old one.
    (ck / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "hidden_size": 512}')
    assert resolve(str(ck)).fingerprint != local.fingerprint


@pytest.mark.parametrize("arg,error,message", [
    ("missing.gguf", "UsageError", "does not exist"),
    ("../../x", "UsageError", "neither a local folder nor a Hugging Face repo id"),
    ("bad name/x", "UsageError", "neither a local folder nor a Hugging Face repo id"),
    ("{notgguf}", "GGUFError", "is not a GGUF file"),
    ("{empty}", "SourceError", "neither an HF checkpoint nor GGUFs"),
])
def test_resolve_refuses_what_is_no_model(arg, error, message, tmp_path, monkeypatch):
    from edgeq import errors
    from edgeq.sources import resolve

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notgguf").write_text("hello")
    (tmp_path / "empty").mkdir()
    with pytest.raises(getattr(errors, error), match=message):
        resolve(arg.format(notgguf=tmp_path / "notgguf", empty=tmp_path / "empty"))


def test_resolve_pins_a_repo_id_to_its_commit_without_downloading(fake_hub, tmp_path, monkeypatch):
    from conftest import write_minimal_checkpoint

    from edgeq.sources import resolve

    ck = write_minimal_checkpoint(tmp_path / "ck")
    fake_hub.repos["acme/tiny"] = repo = Repo({p.name: p.read_bytes() for p in ck.iterdir()})
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    src = resolve("acme/tiny", fetch=False)
    assert (src.kind, src.name, src.repo_id, src.revision, src.path) == ("hub", "tiny", "acme/tiny", repo.commit, None)
    assert src.fingerprint == f"acme/tiny@{repo.commit}" and _file_downloads(fake_hub) == 0
    fetched = resolve("acme/tiny", revision=repo.commit)
    assert fetched.path is not None and (fetched.path / "config.json").is_file()
    assert fetched.record()["revision"] == repo.commit and fetched.record()["kind"] == "hub"
