"""`edgeq upload`: the real huggingface_hub upload code against the Hub stand-in (tests/hubserver.py).

The folder is a tiny Llama converted from a repo on the stand-in (so its manifest names a Hub source, with a
model card and licence), measured by the real `edgeq eval ppl` and `edgeq bench`.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from hubserver import FakeHub, Repo, User

from edgeq.cli import cli, main
from edgeq.errors import HubError, UsageError, VerifyFailed
from edgeq.uploading import upload

TOKEN, READ_TOKEN, OTHER_TOKEN = "hf_acme_write", "hf_acme_read", "hf_bob_write"
SOURCE = "edgeq-test/tiny-llama"
CARD = b"---\nlicense: mit\n---\n# tiny llama\n"


@pytest.fixture(autouse=True)
def _plain_lfs(monkeypatch: pytest.MonkeyPatch) -> None:
    # The stand-in speaks plain LFS, not Xet: huggingface_hub takes that path when Xet is off, as without hf_xet.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    """The converted folder and its results (made once; each test works on a copy)."""
    from edgeq.conversion import convert

    hub = FakeHub().start()
    try:
        files = {p.name: p.read_bytes() for p in tiny_llama.iterdir() if p.is_file()}
        hub.repos[SOURCE] = Repo({**files, "README.md": CARD})
        mp = pytest.MonkeyPatch()
        mp.setenv("HF_ENDPOINT", hub.endpoint)
        mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))
        base = tmp_path_factory.mktemp("upload")
        convert(SOURCE, quants=["Q8_0", "Q4_0"], outdir=base / "tiny-llama", progress=False)
        mp.undo()
    finally:
        hub.stop()
    folder = base / "tiny-llama"
    res = base / "results"
    res.mkdir()
    runner = CliRunner()
    r = runner.invoke(cli, ["eval", "ppl", str(folder / "tiny-llama-F16.gguf"), str(folder / "tiny-llama-Q8_0.gguf"),
                            "--reference", str(folder / "tiny-llama-F16.gguf"), "--ctx", "128", "--max-tokens", "512",
                            "-o", str(res / "eval.json"), "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["bench", str(folder / "tiny-llama-Q8_0.gguf"), "-p", "16", "-n", "4", "-r", "1",
                            "--batch", "1", "-o", str(res / "bench.json"), "--json"])
    assert r.exit_code == 0, r.output
    return base


@pytest.fixture
def folder(made: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "tiny-llama"
    shutil.copytree(made / "tiny-llama", dst)
    return dst


@pytest.fixture
def hub() -> FakeHub:
    h = FakeHub(users={TOKEN: User("acme", orgs=("acme-org",)), READ_TOKEN: User("acme", role="read"),
                       OTHER_TOKEN: User("bob")}).start()
    yield h
    h.stop()


def _card(text: str):  # noqa: ANN202 - huggingface_hub's ModelCard
    from huggingface_hub import ModelCard

    return ModelCard(text)


def test_upload_publishes_the_folder_in_one_commit_with_a_measured_card(folder, made, hub):
    res = upload(folder, "acme/tiny-llama-GGUF", token=TOKEN, endpoint=hub.endpoint, progress=False,
                 results=[made / "results"])
    repo = hub.repos["acme/tiny-llama-GGUF"]
    assert len(hub.commits) == 1 and res.commit_url and res.commit_url.endswith(repo.commit)
    for name in ("tiny-llama-F16.gguf", "tiny-llama-Q8_0.gguf", "tiny-llama-Q4_0.gguf", "edgeq-manifest.json"):
        assert repo.files[name] == (folder / name).read_bytes(), name  # byte-identical
    card = _card(repo.files["README.md"].decode())
    d = card.data.to_dict()
    assert d["base_model"] == SOURCE and d["base_model_relation"] == "quantized" and d["license"] == "mit"
    assert {"gguf", "llama-cpp", "edgeq", "llama"} <= set(d["tags"]) and d["pipeline_tag"] == "text-generation"
    # The measured row: KLD from the eval, tok/s and RAM from the bench, with the hardware named.
    ev = json.loads((made / "results" / "eval.json").read_text())
    kld = next(r["kld_mean"] for r in ev["rows"] if r["model"]["path"].endswith("Q8_0.gguf"))
    q8 = next(line for line in card.text.splitlines() if line.startswith("| `tiny-llama-Q8_0.gguf`"))
    assert format(kld, ".3g") in q8 and "—" not in q8
    bench = json.loads((made / "results" / "bench.json").read_text())
    assert bench["environment"]["cpu"] in card.text and "128 tokens" not in card.text
    q4 = next(line for line in card.text.splitlines() if line.startswith("| `tiny-llama-Q4_0.gguf`"))
    assert q4.count("—") == 6  # nothing measured: no figure shown
    # The F16 file was the eval's reference: no KLD of its own, and the card says what it is instead.
    assert "Not measured: quality of `tiny-llama-Q4_0.gguf`." in card.text
    f16 = next(line for line in card.text.splitlines() if line.startswith("| `tiny-llama-F16.gguf`"))
    assert "| reference |" in f16 and "is the reference the others' KLD is measured against" in card.text
    assert "llama-cli -hf acme/tiny-llama-GGUF:Q8_0" in card.text and "ollama run hf.co/" in card.text
    assert res.not_measured == ["tiny-llama-Q4_0.gguf"]
    assert not (folder / ".edgeq-upload").exists()


def test_dry_run_writes_the_card_and_sends_nothing(folder, made, hub):
    res = upload(folder, "acme/tiny-llama-GGUF", dry_run=True, endpoint=hub.endpoint, progress=False,
                 results=[made / "results" / "eval.json"], exclude=["F16"])
    assert hub.requests == [] and res.dry_run
    card = (folder / "README.md").read_text()
    assert _card(card).data.base_model == SOURCE
    assert [f.path_in_repo for f in res.files] == ["tiny-llama-Q8_0.gguf", "tiny-llama-Q4_0.gguf",
                                                   "edgeq-manifest.json", "README.md"]
    assert "tiny-llama-F16.gguf" not in card


def test_default_repo_is_the_users_model_gguf_and_a_pr_leaves_main_alone(folder, hub):
    res = upload(folder, token=TOKEN, endpoint=hub.endpoint, progress=False, include=["Q4_0"])
    assert res.repo_id == "acme/tiny-llama-GGUF" and set(hub.repos[res.repo_id].files) == {
        "tiny-llama-Q4_0.gguf", "edgeq-manifest.json", "README.md"}
    main = dict(hub.repos[res.repo_id].files)
    res = upload(folder, "acme-org/tiny-llama-GGUF", token=TOKEN, endpoint=hub.endpoint, progress=False,
                 include=["Q4_0"])
    assert res.repo_id == "acme-org/tiny-llama-GGUF"  # an organization the user belongs to
    res = upload(folder, "acme/tiny-llama-GGUF", token=TOKEN, endpoint=hub.endpoint, progress=False,
                 include=["Q8_0"], create_pr=True)
    assert res.pull_request_url and hub.repos["acme/tiny-llama-GGUF"].files == main
    assert "tiny-llama-Q8_0.gguf" in hub.prs["acme/tiny-llama-GGUF"][0]


@pytest.mark.slow
def test_split_files_reassemble_and_load(folder, hub, tmp_path):
    from edgeq.diagnosis.smoke import probe
    from edgeq.llamacpp import find_toolchain
    from edgeq.llamacpp.split import merge
    from edgeq.sources.gguf_header import tensor_arrays

    whole = folder / "tiny-llama-Q8_0.gguf"
    res = upload(folder, "acme/split", token=TOKEN, endpoint=hub.endpoint, progress=False, include=["Q8_0"],
                 max_shard_size=whole.stat().st_size * 3 // 4)
    shards = sorted(n for n in hub.repos["acme/split"].files if n.endswith(".gguf"))
    assert len(shards) >= 2 and shards[0] == f"tiny-llama-Q8_0-00001-of-{len(shards):05d}.gguf"
    assert all(len(hub.repos["acme/split"].files[n]) <= whole.stat().st_size * 3 // 4 for n in shards)
    assert "(+" in hub.repos["acme/split"].files["README.md"].decode()  # the card lists it as one file
    down = tmp_path / "down"
    down.mkdir()
    for n in shards:
        (down / n).write_bytes(hub.repos["acme/split"].files[n])
    joined = merge(find_toolchain(), down / shards[0], tmp_path / "joined.gguf")
    a, b = tensor_arrays(whole), tensor_arrays(joined)
    assert list(a) == list(b) and all((a[k][1] == b[k][1]).all() for k in a)
    assert probe(down / shards[0], threads=1)["logits"] == probe(whole, threads=1)["logits"]  # loads as it is
    assert len(res.files) == len(shards) + 2


def test_refusals_each_in_one_line_and_nothing_published(folder, hub, tmp_path, monkeypatch):
    ep = {"endpoint": hub.endpoint, "progress": False}
    with pytest.raises(HubError, match="no Hugging Face token") as e:
        upload(folder, "acme/x", **ep)
    assert "hf auth login" in e.value.hint
    with pytest.raises(HubError, match="read-only"):
        upload(folder, "acme/x", token=READ_TOKEN, **ep)
    hub.repos["bob/taken"] = Repo({"README.md": b"bob's"}, token=OTHER_TOKEN)
    with pytest.raises(HubError, match="namespace 'bob'.*cannot publish there"):
        upload(folder, "bob/taken", token=TOKEN, **ep)
    with pytest.raises(HubError, match="refused"):  # a token the Hub does not know
        upload(folder, "acme/x", token="hf_nobody", **ep)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="has no edgeq-manifest.json"):
        upload(tmp_path / "empty", "acme/x", token=TOKEN, **ep)
    with pytest.raises(UsageError, match="no file of the folder is left"):
        upload(folder, "acme/x", token=TOKEN, include=["Q6_K"], **ep)
    with pytest.raises(UsageError, match="cannot hold this file's header and largest tensor") as e:
        upload(folder, "acme/x", token=TOKEN, include=["Q8_0"], max_shard_size=2_000_000, **ep)
    assert "--max-shard-size of at least" in e.value.hint and not (folder / ".edgeq-upload").exists()
    q4 = folder / "tiny-llama-Q4_0.gguf"
    data = bytearray(q4.read_bytes())
    data[-1] ^= 1
    q4.write_bytes(bytes(data))
    with pytest.raises(VerifyFailed, match="no longer matches its sha256") as e:
        upload(folder, "acme/x", token=TOKEN, **ep)
    assert "edgeq verify" in e.value.hint
    assert hub.commits == [] and "acme/x" not in hub.repos and hub.lfs == {}


def test_network_gone_mid_upload_commits_nothing_and_a_rerun_resumes(folder, hub, monkeypatch):
    import huggingface_hub.utils._http as http

    monkeypatch.setattr(http.time, "sleep", lambda s: None)  # huggingface_hub's own retries, without the waits
    hub.uploads_before_outage = 1  # one file arrives, then the connection goes for good
    with pytest.raises(HubError, match="connection to the Hub was lost") as e:
        upload(folder, "acme/net", token=TOKEN, endpoint=hub.endpoint, progress=False)
    assert "run the same command again" in e.value.hint
    assert hub.commits == [] and hub.repos["acme/net"].files == {} and len(hub.lfs) == 1
    hub.uploads_before_outage = None
    (arrived,), before = list(hub.lfs), len(hub.requests)
    upload(folder, "acme/net", token=TOKEN, endpoint=hub.endpoint, progress=False)
    assert len(hub.commits) == 1 and "tiny-llama-Q8_0.gguf" in hub.repos["acme/net"].files
    puts = [p for m, p, _ in hub.requests[before:] if m == "PUT"]
    assert len(puts) == 2 and not any(p.endswith(arrived) for p in puts)  # what the Hub holds is not sent again


def test_cli_dry_run_json_and_exit_codes(folder, made, capsys):
    main(["upload", str(folder), "acme/tiny-llama-GGUF", "--dry-run", "--json", "--results", str(made / "results")])
    out = json.loads(capsys.readouterr().out)
    assert out["schema"] == "edgeq-upload/1" and out["dry_run"] and out["card"].endswith("README.md")
    assert out["results"] and out["not_measured"] == ["tiny-llama-Q4_0.gguf"]
    for args, code, message in [(["acme/x"], 1, "no Hugging Face token"),
                                (["not a repo", "--dry-run"], 2, "is not a Hub repo id")]:
        with pytest.raises(SystemExit) as e:
            main(["upload", str(folder), *args])
        assert e.value.code == code and message in capsys.readouterr().err
