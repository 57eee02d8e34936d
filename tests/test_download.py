"""edgeq's real download code against a local stand-in for the Hub (tests/hubserver.py)."""
import json

import pytest
from hubserver import Repo

from edgeq.cli import main
from edgeq.errors import HubError, UsageError
from edgeq.sources.hub import download

FILES = {
    "config.json": b'{"architectures": ["LlamaForCausalLM"]}',
    "model.safetensors": b"\x00" * 4096,
    "tokenizer.json": b"{}",
    "tokenizer_config.json": b"{\"model_max_length\": 512}",
    "README.md": b"# card",
    "pytorch_model.bin": b"pickle",
    "original/consolidated.pth": b"pickle",
    "chat_template.jinja": b"{{ x }}",
}


@pytest.fixture
def hub(fake_hub, monkeypatch):
    fake_hub.repos["org/tiny"] = Repo(dict(FILES))
    fake_hub.repos["org/old"] = Repo({"config.json": b"{}", "pytorch_model.bin": b"pickle", "tokenizer.json": b"{}"})
    fake_hub.repos["org/gated"] = Repo({"config.json": b"{}"}, gated=True, token="hf_secret")
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    return fake_hub


def test_downloads_only_what_conversion_needs(hub, tmp_path):
    res = download("org/tiny", cache_dir=tmp_path / "cache", progress=False)
    # README.md too: the model card holds the licence that `edgeq upload` carries to what is made from it.
    assert sorted(hub.downloaded()) == sorted(["README.md", "chat_template.jinja", "config.json", "model.safetensors",
                                               "tokenizer.json", "tokenizer_config.json"])
    assert res.revision == hub.repos["org/tiny"].commit
    assert (tmp_path / "cache").exists() and (res.path.startswith(str(tmp_path / "cache")))


def test_pickles_only_when_there_are_no_safetensors(hub, tmp_path):
    res = download("org/old", cache_dir=tmp_path, progress=False)
    assert "pytorch_model.bin" in res.files and "pytorch_model.bin" in hub.downloaded()


def test_second_download_fetches_nothing(hub, tmp_path):
    download("org/tiny", cache_dir=tmp_path, progress=False)
    n = len(hub.downloaded())
    download("org/tiny", cache_dir=tmp_path, progress=False)
    assert len(hub.downloaded()) == n


def test_local_dir_and_revision(hub, tmp_path):
    commit = hub.repos["org/tiny"].commit
    res = download("org/tiny", revision=commit, local_dir=tmp_path / "here", progress=False)
    assert (tmp_path / "here" / "model.safetensors").stat().st_size == 4096
    assert res.revision == commit


def test_token_from_environment_is_sent(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    res = download("org/gated", cache_dir=tmp_path, progress=False)
    assert res.files == ["config.json"]
    assert ("Bearer hf_secret") in {a for _, _, a in hub.requests}


@pytest.mark.parametrize("repo,kwargs,message", [
    ("org/gated", {}, "org/gated is gated.*hf auth login.*--token"),
    ("org/gated", {"token": "hf_wrong"}, "org/gated is gated.*hf auth login"),
    ("org/missing", {}, "repository org/missing does not exist or is private.*hf auth login"),
    ("org/tiny", {"revision": "v9"}, "revision 'v9' does not exist in org/tiny"),
])
def test_hub_refusals_are_one_line_naming_the_fix(hub, tmp_path, repo, kwargs, message):
    with pytest.raises(HubError, match=message) as e:
        download(repo, cache_dir=tmp_path, progress=False, **kwargs)
    assert "\n" not in str(e.value)


def test_no_network(tmp_path):
    with pytest.raises(HubError, match="cannot reach the Hugging Face Hub.*local checkpoint folder"):
        download("org/tiny", endpoint="http://127.0.0.1:9", cache_dir=tmp_path, progress=False)


def test_local_folder_is_accepted_as_is(tmp_path):
    res = download(str(tmp_path), progress=False)
    assert res.local and res.path == str(tmp_path.resolve())


@pytest.mark.parametrize("bad", ["../../x", "/etc/x-not-a-dir", "a/b/c", "bad name/x"])
def test_bad_repo_ids_are_usage_errors(bad):
    with pytest.raises(UsageError, match="neither a local folder nor a Hugging Face repo id"):
        download(bad, progress=False)


def test_cli_download_json_and_errors(hub, tmp_path, capsys):
    main(["download", "org/tiny", "--local-dir", str(tmp_path / "d"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["repo_id"] == "org/tiny" and "pytorch_model.bin" not in out["files"]
    with pytest.raises(SystemExit) as e:
        main(["download", "org/gated"])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1 and "hf auth login" in err
    with pytest.raises(SystemExit) as e:
        main(["download", "org/gated", "--json"])
    assert json.loads(capsys.readouterr().out)["error"] == "hub"
