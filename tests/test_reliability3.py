"""Reliability, round three (issue 32): hostile inputs to the verbs that write, publish or run what a user gave.

Fast by design: tiny GGUFs written here, folders with hand-made manifests, the Hub stand-in, and failures that must
come before any model work (proved by what was not made or asked for, never by timing).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_main, write_minimal_checkpoint, write_small_gguf
from hubserver import FakeHub, Repo, User

from edgeq import manifest
from edgeq.errors import SourceError, ToolFailed, UsageError, VerifyFailed
from edgeq.uploading import UploadResult

TOKEN = "hf_acme_write"


@pytest.fixture(autouse=True)
def _plain_lfs(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the stand-in speaks plain LFS


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """The Hub stand-in, with a source repo whose download would be the first model work of ship and tune."""
    h = FakeHub(users={TOKEN: User("acme")}).start()
    h.repos["acme/tiny"] = Repo({"config.json": b'{"architectures": ["LlamaForCausalLM"]}'})
    monkeypatch.setenv("HF_ENDPOINT", h.endpoint)
    yield h
    h.stop()


def gguf(path: Path, *, arch: str = "llama", meta: dict[str, object] | None = None) -> Path:
    """A complete GGUF of a few KiB with ``meta`` added (strings, ints, floats, bools)."""
    import numpy as np
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), arch)
    w.add_name(path.stem)
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_embedding_length(64)
    for k, v in (meta or {}).items():
        if isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, int):
            w.add_uint32(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        else:
            w.add_string(k, str(v))
    w.add_tensor("token_embd.weight", np.ones((32, 64), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def folder_of(root: Path, files: dict[str, dict[str, object]], *, options: dict[str, object] | None = None,
              source: dict[str, object] | None = None) -> Path:
    """A folder as convert leaves it: GGUFs named ``<stem>-<type>.gguf`` and a manifest recording each."""
    root.mkdir(parents=True, exist_ok=True)
    mf = manifest.Manifest(source=source or {"kind": "local", "path": str(root / "ck"), "fingerprint": "f"},
                           llama_cpp="b1 (test)", options=dict(options or {"outtype": "F16"}))
    for name, meta in files.items():
        gguf(root / name, meta=meta)
        mf.files[name] = manifest.record(root / name, name[: -len(".gguf")].rsplit("-", 1)[-1], 8.5, "r")
    manifest.save(root, mf)
    return root


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside every folder under test that must never leave the machine."""
    p = tmp_path / "elsewhere" / "secret.txt"
    p.parent.mkdir()
    p.write_text("root:x:0:0:SECRET-NOT-FOR-THE-HUB\n")
    return p


# --- 1. upload publishes only what is in the folder --------------------------------------------------------------

IMATRIX = {"quantize.imatrix.file": "m-imat.gguf", "quantize.imatrix.dataset": "/tmp/text.txt",
           "quantize.imatrix.chunks_count": 4}


def _dry(folder: Path) -> UploadResult:
    from edgeq.uploading import upload

    return upload(folder, "acme/m-GGUF", dry_run=True, progress=False)


@pytest.mark.parametrize("how", ["recipe", "tune-result", "imatrix-file", "imatrix-folder", "gguf", "manifest"])
def test_nothing_reached_through_a_symlink_is_listed_or_published(tmp_path, secret, how):
    folder = folder_of(tmp_path / "m", {"m-Q8_0.gguf": IMATRIX})
    if how == "recipe":
        (folder / "m-Q8_0.tensor-types.txt").symlink_to(secret)
    elif how == "tune-result":
        (folder / "m-Q8_0.tune.json").symlink_to(secret)
    elif how == "imatrix-file":
        (folder / "imatrix").mkdir()
        (folder / "imatrix" / "m-imat.gguf").symlink_to(secret)
    elif how == "imatrix-folder":  # the folder on the way is the link: the file itself is plain
        (secret.parent / "m-imat.gguf").write_text("SECRET-NOT-FOR-THE-HUB")
        (folder / "imatrix").symlink_to(secret.parent, target_is_directory=True)
    elif how == "gguf":  # the same bytes, so the manifest's sha256 matches: only the link gives it away
        real = secret.parent / "m-Q8_0.gguf"
        (folder / "m-Q8_0.gguf").rename(real)
        (folder / "m-Q8_0.gguf").symlink_to(real)
    else:
        real = secret.parent / "edgeq-manifest.json"
        (folder / "edgeq-manifest.json").rename(real)
        (folder / "edgeq-manifest.json").symlink_to(real)
    with pytest.raises(VerifyFailed, match=r"is a symlink \(to .*\): upload publishes only the files that are in"):
        _dry(folder)
    assert not (folder / "README.md").exists() and not (folder / ".edgeq-upload").exists()


def test_a_real_copy_goes_and_a_linked_one_stops_the_upload_before_anything_is_sent(tmp_path, secret, hub):
    from edgeq.uploading import upload

    folder = folder_of(tmp_path / "m", {"m-Q8_0.gguf": IMATRIX})
    (folder / "imatrix").mkdir()
    (folder / "imatrix" / "m-imat.gguf").write_bytes(b"imatrix")
    (folder / "m-Q8_0.tensor-types.txt").write_text("blk\\.0\\..*=q8_0\n")
    res = upload(folder, "acme/m-GGUF", token=TOKEN, endpoint=hub.endpoint, progress=False)
    sent = set(hub.repos["acme/m-GGUF"].files)
    assert {"imatrix/m-imat.gguf", "m-Q8_0.tensor-types.txt", "m-Q8_0.gguf", "README.md"} <= sent
    assert res.commit_url
    (folder / "m-Q8_0.tensor-types.txt").unlink()
    (folder / "m-Q8_0.tensor-types.txt").symlink_to(secret)
    commits, lfs = len(hub.commits), dict(hub.lfs)
    with pytest.raises(VerifyFailed, match="m-Q8_0.tensor-types.txt is a symlink"):
        upload(folder, "acme/m-GGUF", token=TOKEN, endpoint=hub.endpoint, progress=False)
    assert len(hub.commits) == commits and hub.lfs == lfs
    assert not any(b"SECRET" in d for d in hub.lfs.values()) and not any(
        b"SECRET" in d for d in hub.repos["acme/m-GGUF"].files.values())


def test_a_staging_folder_that_is_a_link_is_never_written_through(tmp_path, secret):
    folder = folder_of(tmp_path / "m", {"m-Q8_0.gguf": {}})
    (folder / ".edgeq-upload").symlink_to(secret.parent, target_is_directory=True)
    with pytest.raises(UsageError, match="is not a folder edgeq made"):
        _dry(folder)
    assert sorted(p.name for p in secret.parent.iterdir()) == ["secret.txt"]


def test_ship_copies_no_linked_companion_into_its_deploy_folder(tmp_path, secret):
    from edgeq.uploading import companions

    folder = folder_of(tmp_path / "work", {"m-tuned-4.50bpw.gguf": {}})
    (folder / "m-tuned-4.50bpw.tensor-types.txt").symlink_to(secret)
    with pytest.raises(VerifyFailed, match="is a symlink"):
        companions(folder, "m-tuned-4.50bpw.gguf")  # the one list ship's deploy folder copies from


# --- 2. model cards: no string from a file changes the card's structure -------------------------------------------

HOSTILE = [
    "a`b``c` `d\n# Pwned heading\n\n## another",
    "<script>alert(1)</script><img src=x onerror=alert(2)>",
    "\x1b[2J\x1b]0;title\x07\x1b[8mhidden\r\nline",
    "| x | y |\n|---|---|\n| injected | row |",
    "[click](javascript:alert(1)) ![i](http://x/i.png) &#x3C;b&#x3E; *em* _u_ ~~s~~",
    "```\ncode fence\n```",
    "\u202egnp.exe \u2066bidi",
]


def _structure(card: str) -> tuple[list[str], list[str], list[int]]:
    """(headings, link targets, cells per table row) as a CommonMark+GFM-tables renderer reads the card;
    raises if it holds raw HTML."""
    from markdown_it import MarkdownIt

    body = card.split("\n---\n", 1)[1]
    tokens = MarkdownIt("commonmark").enable("table").parse(body)
    headings, links, cells, row = [], [], [], 0
    for i, t in enumerate(tokens):
        assert t.type not in ("html_block", "html_inline"), t.content
        if t.type == "heading_open":
            headings.append(tokens[i + 1].content)
        for c in [t, *(t.children or [])]:
            assert c.type != "html_inline", c.content
            if c.type in ("link_open", "image"):
                links.append(str(c.attrs.get("href") or c.attrs.get("src")))
        if t.type == "tr_open":
            row = 0
        elif t.type in ("td_open", "th_open"):
            row += 1
        elif t.type == "tr_close":
            cells.append(row)
    return headings, links, cells


@pytest.mark.parametrize("evil", HOSTILE)
def test_card_structure_survives_hostile_metadata_names_and_results(tmp_path, evil):
    from edgeq.uploading import upload

    meta = {"quantize.imatrix.file": f"{evil}.gguf", "quantize.imatrix.dataset": f"/tmp/{evil}.txt",
            "quantize.imatrix.chunks_count": 7, "general.architecture_note": evil}
    name = "m-tuned-4.50bpw.gguf"
    folder = folder_of(tmp_path / "m", {"m-Q8_0.gguf": meta, name: meta},
                       options={"outtype": f"F16{evil}", "tuned": {name: {
                           "budget": {"kind": "size", "asked": evil, "bytes": 10}, "recipe_sha256": evil,
                           "predicted_kld": evil, "measured_kld": None}}},
                       source={"kind": "local", "path": f"/x/{evil}", "fingerprint": evil})
    mf = manifest.load(folder)
    assert mf is not None
    mf.llama_cpp = evil
    manifest.save(folder, mf)
    (folder / "results").mkdir()
    size = (folder / "m-Q8_0.gguf").stat().st_size
    run = {"backend": "llama.cpp", "status": "ok", "prompt": "en", "batch": 1, "path": str(folder / "m-Q8_0.gguf"),
           "file_size_bytes": size, "pp_tps": {"median": 10.0}, "tg_tps": {"median": 5.0}, "n_prompt": 8,
           "n_gen": 4, "threads": 2, "variant": "Q8_0"}
    (folder / "results" / "bench.json").write_text(json.dumps({
        "schema": "edgeq-bench/1", "runs": [run],
        "environment": {"cpu": evil, "physical_cores": 2, "machine": evil, "os": evil, "date": evil,
                        "versions": {"llama.cpp": evil}}}))
    res = upload(folder, "acme/m-GGUF", dry_run=True, progress=False)
    card = Path(res.card).read_text()
    headings, links, cells = _structure(card)
    assert headings == ["m-GGUF", "Files", "How they were made", "Use", "Verify"]
    assert links == []  # a local source: the card links to nothing
    assert cells == [10, 10, 10]  # the header row and one row per file, ten cells each
    assert "\x1b" not in card and "\r" not in card and "\x07" not in card and "\u202e" not in card
    assert "SECRET" not in card and "None" not in card
    assert res.results  # the hostile bench result was read, and its CPU name shown escaped
    for block in re.findall(r"```bash\n(.*?)```", card, re.S):  # what a reader pastes into a shell
        for line in block.splitlines():
            assert len(line.split("#")[0].strip().split("\n")) == 1


def test_card_names_the_default_calibration_text_and_every_budget_in_words(tmp_path):
    from edgeq.uploading.card import budget_words

    meta = {**IMATRIX, "quantize.imatrix.dataset": "/tmp/edgeq-calibration-193125.txt"}
    folder = folder_of(tmp_path / "m", {"m-Q4_K_M-imat.gguf": meta})
    card = Path(_dry(folder).card).read_text()
    assert "edgeq-calibration" not in card and "hamlet" in card and "4 chunks" in card
    words = {json.dumps(b): budget_words(b) for b in [
        {"kind": "max-kld", "asked": 0.02, "bytes": 0}, {"kind": "max-kld", "asked": None, "bytes": 0},
        {"kind": "size", "asked": "450MiB", "bytes": 1}, {"kind": "size", "asked": 123456789, "bytes": 1},
        {"kind": "bpw", "asked": 4.8, "bytes": 1}, {"kind": "device", "asked": "pi5-8gb", "bytes": 9},
        {"kind": None, "asked": None, "bytes": 2048}, None, "garbage"]}
    assert all("None" not in w and w.startswith("for ") for w in words.values()), words
    assert words[json.dumps({"kind": "max-kld", "asked": 0.02, "bytes": 0})] == "for a predicted KLD of at most 0.02"
    assert "117.7 MiB" in words[json.dumps({"kind": "size", "asked": 123456789, "bytes": 1})]


def test_markdown_helpers_keep_any_text_literal():
    from markdown_it import MarkdownIt

    from edgeq.output import md_code, md_text

    md = MarkdownIt("commonmark").enable("table")
    for evil in HOSTILE:
        for part in (md_code(evil), md_text(evil)):
            assert "\n" not in part
            html = md.render(f"before {part} after")
            assert html.count("<p>") == 1 and "<script" not in html and "<img" not in html and "<a " not in html
        inner = md.render(md_code(evil))
        assert inner.count("<code>") == 1


# --- 3. run.sh: a file name cannot run a command --------------------------------------------------------------------

NAMES = ["a\ntouch PWNED\n.gguf", "$(touch PWNED).gguf", "`touch PWNED`.gguf", "x;touch PWNED;.gguf",
         "it's \"quoted\" & <x>.gguf", "-rf .gguf", "sp ace\ttab\r.gguf", "dollar$HOME.gguf"]


@pytest.mark.parametrize("name", NAMES)
def test_run_sh_passes_any_file_name_as_one_argument_and_runs_nothing_else(tmp_path, name):
    from edgeq.bundling import write_run_sh

    folder = tmp_path / "deploy"
    folder.mkdir()
    write_run_sh(folder / "run.sh", name, ctx=512, threads=2)
    args_file = tmp_path / "args"
    fake = tmp_path / "fake-completion"
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done > {args_file}\n')
    fake.chmod(0o755)
    r = subprocess.run(["sh", str(folder / "run.sh"), "Hello there"], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "LLAMA_COMPLETION": str(fake)})
    assert r.returncode == 0, r.stderr
    args = args_file.read_bytes().decode().split("\0")[:-1]
    assert args[args.index("-m") + 1] == f"{folder}/{name}"
    assert args[args.index("-p") + 1] == "Hello there" and args[args.index("-c") + 1] == "512"
    assert not (tmp_path / "PWNED").exists() and not (folder / "PWNED").exists()
    comment = (folder / "run.sh").read_text().splitlines()[1]
    assert comment.startswith("# Written by edgeq: runs ") and comment.endswith("llama-completion.")


# --- 4 and 6. usage errors before any model work --------------------------------------------------------------------

def _refused_early(args: list[str], capsys: pytest.CaptureFixture[str], hub: FakeHub, tmp_path: Path,
                   code: int = 2) -> str:
    """Run edgeq; the error must be the usage error, with the Hub never asked and nothing made."""
    before = sorted(p.name for p in tmp_path.iterdir())
    got, err, out = run_main(args, capsys)
    assert got == code, err
    assert err.startswith("Error: ") and len(err.splitlines()) == 1 and "Traceback" not in err
    assert hub.requests == [], hub.requests  # not even the source's commit was asked for
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no models/, no dist/, no -o folder
    return err


@pytest.mark.parametrize("args, message", [
    (["--for", "pi9"], "unknown device 'pi9'"),
    (["--for", "m1-8gb", "--ram", "8G"], "one target"),
    (["--ram", "8"], "has no unit"),
    (["--ram", "8G", "--bandwidth", "0"], "--bandwidth 0"),
    (["--max-kld", "0"], "--max-kld 0: expected a KLD above 0"),
    (["--max-kld", "nan"], "--max-kld nan"),
    (["--max-kld", "-1"], "--max-kld -1"),
    (["--min-tps", "-5"], "--min-tps -5: expected a speed above 0"),
    (["--min-tps", "inf"], "--min-tps inf"),
    (["--quants", ","], "names no names"),
    (["--quants", "Q9_9"], "Q9_9"),
    (["-o", "AFILE/sub"], "AFILE is a file, not a folder"),
    (["--work", "AFILE/w"], "AFILE is a file, not a folder"),
    (["--push", "acme/modèle"], "only ASCII"),
    (["--push", "acme/x.git"], "cannot end in '.git'"),
    (["--push", "acme/a--b"], "cannot hold '--'"),
    (["--ctx", "8"], "8 is not in the range"),
])
def test_ship_refuses_every_bad_option_before_converting(tmp_path, capsys, hub, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "AFILE").write_text("a file")
    err = _refused_early(["ship", "acme/tiny", *args], capsys, hub, tmp_path)
    assert message in err


def test_ship_push_without_a_token_is_said_before_converting(tmp_path, capsys, hub, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _refused_early(["ship", "acme/tiny", "--push", "acme/tiny-GGUF"], capsys, hub, tmp_path, code=1)
    assert "no Hugging Face token" in err


def test_ship_push_to_another_namespace_is_said_before_converting(tmp_path, capsys, hub, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err, _ = run_main(["ship", "acme/tiny", "--push", "bob/x", "--token", TOKEN], capsys)
    assert code == 1 and "namespace 'bob'" in err
    assert [p for _, p, _ in hub.requests] == ["/api/whoami-v2"]  # who the token is, and nothing downloaded
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("args, message", [
    (["--size", "100"], "has no unit"),
    (["--size", "0B"], "more than zero"),
    (["--size", "450MiB", "--bpw", "4"], "exactly one budget"),
    (["--bpw", "1.5"], "below the smallest of these types: IQ2_XXS"),
    (["--bpw", "5", "--types", "Q4_K,Q8_0"], None),  # control: the bpw check uses the allowed types
    (["--bpw", "3", "--types", "Q4_K,Q8_0"], "Q4_K stores 4.5 bits"),
    (["--size", "1G", "--types", "Q4_K_M"], "'Q4_K_M' is a llama-quantize recipe"),
    (["--size", "1G", "--types", ","], "names no names"),
    (["--size", "1G", "--types", "Q9"], "not a type tune can choose"),
    (["--max-kld", "0"], "expected a KLD above 0"),
    (["--for", "pi9"], "unknown device"),
    (["--size", "1G", "-o", "AFILE/x"], "AFILE is a file"),
    (["--size", "1G", "--text", "MISSING.txt"], "--text MISSING.txt does not exist"),
    (["--size", "1G", "--text", "EMPTY.txt"], "--text EMPTY.txt is empty"),
    (["--size", "1G", "--text", "FIFO"], "--text FIFO is a FIFO, not a text file"),
    (["--size", "1G", "--calibration", "FIFO"], "--calibration FIFO is a FIFO"),
    (["--size", "1G", "--calibration", "BINARY"], "not UTF-8"),
    (["--size", "1G", "--name", "///"], "cannot make a file name"),
])
def test_tune_refuses_every_bad_option_before_any_stage(tmp_path, capsys, hub, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "AFILE").write_text("a file")
    (tmp_path / "EMPTY.txt").write_text("  \n")
    (tmp_path / "BINARY").write_bytes(b"\xff\xfe\x00" * 900)
    os.mkfifo(tmp_path / "FIFO")  # read, it would block forever
    if message is None:  # the options pass: the source is asked for next (and fails, being a stand-in)
        code, err, _ = run_main(["tune", "acme/tiny", *args], capsys)
        assert hub.requests and "bits per weight" not in err
        return
    assert message in _refused_early(["tune", "acme/tiny", *args], capsys, hub, tmp_path)


def _sparse_checkpoint(folder: Path, n_params: int, **config: object) -> Path:
    """A checkpoint whose one safetensors file holds ``n_params`` bf16 weights as a hole (no disk used)."""
    write_minimal_checkpoint(folder, **config)
    header = json.dumps({"model.embed_tokens.weight": {"dtype": "BF16", "shape": [n_params // 256, 256],
                                                       "data_offsets": [0, n_params // 256 * 256 * 2]}}).encode()
    with open(folder / "model.safetensors", "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        f.truncate(8 + len(header) + n_params // 256 * 256 * 2)
    return folder


def test_tune_refuses_a_budget_below_the_smallest_file_from_the_checkpoint_alone(tmp_path, capsys):
    ck = _sparse_checkpoint(tmp_path / "ck", 500_000_000)
    code, err, _ = run_main(["tune", str(ck), "--size", "100MiB", "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and "below the smallest this model can be" in err and "500,000,000 parameters" in err
    assert "at least 122.9 MiB" in err  # 5e8 weights × 2.06 bits (IQ2_XXS)
    assert not (tmp_path / "out").exists() and not (tmp_path / "models").exists()
    code, err, _ = run_main(["tune", str(ck), "--size", "200MiB", "--types", "Q4_K,Q8_0", "-o",
                             str(tmp_path / "out")], capsys)
    assert code == 2 and "every weight at Q4_K" in err


def test_float_file_floor_counts_vectors_in_f32_and_each_matrix_at_its_smallest_fitting_type(tmp_path):
    from edgeq.sources.gguf_header import read_header
    from edgeq.tuning.allocate import floor_bytes

    h = read_header(gguf(tmp_path / "f.gguf"))  # token_embd [32 x 64] (rows of 64), output_norm [64]
    align = h.alignment
    pad = lambda n: -(-n // align) * align  # noqa: E731
    # Rows of 64 fit no 256-block: Q4_K falls back to Q5_0 (22 bytes per 32), Q8_0 fits (34 per 32).
    assert floor_bytes(h, {"Q4_K"}) == h.data_offset_bytes - align + pad(32 * 2 * 22) + pad(64 * 4)
    assert floor_bytes(h, {"Q4_K", "Q4_0"}) == h.data_offset_bytes - align + pad(32 * 2 * 18) + pad(64 * 4)


@pytest.mark.parametrize("args, code, message", [
    (["acme/modèle", "--dry-run"], 2, "only ASCII"),
    (["acme/x.git", "--dry-run"], 2, "cannot end in '.git'"),
    (["acme/-x", "--dry-run"], 2, "is not a Hub repo id"),
    (["--include", ",", "--dry-run"], 2, "names no names"),
    (["--exclude", " , ", "--dry-run"], 2, "names no names"),
    (["acme/ok", "--max-shard-size", "100"], 2, "has no unit"),
    (["acme/modèle", "--token", TOKEN], 2, "only ASCII"),
])
def test_upload_refuses_bad_names_before_hashing_or_asking_the_hub(tmp_path, capsys, hub, args, code, message):
    folder = folder_of(tmp_path / "m", {"m-Q8_0.gguf": {}})
    with open(folder / "m-Q8_0.gguf", "r+b") as f:  # hashing would fail with exit 1: the usage error comes first
        f.seek(-1, 2)
        f.write(b"\x01")
    got, err, _ = run_main(["upload", str(folder), *args], capsys)
    assert got == code and message in err, err
    assert hub.requests == [] and not (folder / "README.md").exists()


def test_the_repo_id_rules_are_the_hubs():
    from edgeq.sources.hub import is_repo_id, repo_id_problem

    good = ["a/b", "HuggingFaceTB/SmolLM2-135M", "Qwen/Qwen2.5-0.5B", "me/x_", "x", "a.b/c-d_e", "a" * 96]
    bad = ["acme/modèle", "acme/x.git", "a--b/c", "a/b..c", "a/-b", "a/b-", "a/b.", "/a", "a/b/c", "a b/c",
           "a" * 97, "", "a/", "ß/x"]
    assert [g for g in good if not is_repo_id(g)] == []
    assert [b for b in bad if is_repo_id(b)] == []
    assert all(repo_id_problem(b) for b in bad)


def test_a_non_ascii_repo_id_source_is_a_usage_error_without_the_network(capsys, hub):
    code, err, _ = run_main(["convert", "acme/modèle"], capsys)
    assert code == 2 and "only ASCII" in err and hub.requests == []


def test_bundle_usage_errors_come_before_the_cross_build(tmp_path, capsys):
    model = write_small_gguf(tmp_path / "m-Q8_0.gguf", name="m", add_bos=True)
    for args, message in [(["--arch", "riscv64"], "no cross build for 'riscv64'"),
                          (["--check", "--prompt", "  "], "--prompt is empty"),
                          (["-o", str(tmp_path / "m-Q8_0.gguf" / "x")], "is a file, not a folder")]:
        code, err, _ = run_main(["bundle", str(model), *args], capsys)
        assert code == 2 and message in err, err
    assert not (tmp_path / "dist").exists()


@pytest.mark.parametrize("option", ["--text", "--prompt-file"])
def test_a_fifo_as_a_text_is_named_a_fifo_at_once(tmp_path, capsys, option):
    os.mkfifo(tmp_path / "t.fifo")
    model = write_small_gguf(tmp_path / "m-Q8_0.gguf", name="m", add_bos=True)
    verb = ["eval", "ppl", str(model)] if option == "--text" else ["bench", str(model), "-o", str(tmp_path / "b.json")]
    code, err, _ = run_main([*verb, option, str(tmp_path / "t.fifo")], capsys)
    assert code == 2 and f"{option} {tmp_path / 't.fifo'} is a FIFO, not a text file" in err


# --- 5. -o never deletes what edgeq did not write there -------------------------------------------------------------

SIX = {f"m-{t}.gguf": {} for t in ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0")}


def test_bundle_into_a_convert_folder_is_refused_and_deletes_nothing(tmp_path, capsys):
    from edgeq.bundling import bundle

    folder = folder_of(tmp_path / "models" / "m", SIX)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    with pytest.raises(UsageError, match=r"is an edgeq convert folder \(6 file\(s\).*--force to replace them"):
        bundle(folder / "m-Q4_0.gguf", outdir=folder)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    code, err, _ = run_main(["bundle", str(folder / "m-Q4_0.gguf"), "-o", str(folder)], capsys)
    assert code == 2 and "convert folder" in err
    other = tmp_path / "docs"
    other.mkdir()
    (other / "notes.md").write_text("mine")
    with pytest.raises(UsageError, match=r"is a folder of other files \(notes.md\)"):
        bundle(folder / "m-Q4_0.gguf", outdir=other)


def test_ship_into_a_convert_folder_is_refused_before_converting(tmp_path, capsys, hub, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = folder_of(tmp_path / "conv", SIX)
    before = sorted(p.name for p in folder.iterdir())
    err = _refused_early(["ship", "acme/tiny", "-o", str(folder)], capsys, hub, tmp_path)
    assert "edgeq convert folder" in err and sorted(p.name for p in folder.iterdir()) == before


def test_a_deploy_folder_replaces_only_its_own_unchanged_model(tmp_path):
    folder = folder_of(tmp_path / "dist", {"m-Q8_0.gguf": {}, "m-Q4_0.gguf": {}},
                       options={"ship": {"chosen": "Q8_0"}})
    (folder / "notes.txt").write_text("the user's")
    old = manifest.claim(folder, "ship", force=False)  # an earlier ship's folder: allowed
    assert old is not None
    with open(folder / "m-Q4_0.gguf", "ab") as f:  # changed since edgeq wrote it: the user's now
        f.write(b"edit")
    removed = manifest.remove_replaced(folder, old, "m-new.gguf", force=False)
    assert removed == ["m-Q8_0.gguf"]
    assert sorted(p.name for p in folder.iterdir()) == ["edgeq-manifest.json", "m-Q4_0.gguf", "notes.txt"]
    with pytest.raises(UsageError, match="edgeq ship folder"):
        manifest.claim(folder, "bundle", force=False)  # a ship folder is not a bundle's
    assert manifest.claim(tmp_path / "new", "ship", force=False) is None
    (tmp_path / "empty").mkdir()
    assert manifest.claim(tmp_path / "empty", "bundle", force=False) is None


def test_force_replaces_only_recorded_files(tmp_path):
    folder = folder_of(tmp_path / "conv", SIX)
    (folder / "notes.txt").write_text("never recorded")
    old = manifest.claim(folder, "bundle", force=True)
    removed = manifest.remove_replaced(folder, old, "m-Q4_0.gguf", force=True)
    assert sorted(removed) == sorted(set(SIX) - {"m-Q4_0.gguf"})
    assert sorted(p.name for p in folder.iterdir()) == ["edgeq-manifest.json", "m-Q4_0.gguf", "notes.txt"]


# --- 7. a model that cannot generate text is named before anything runs ---------------------------------------------

ENCODERS = [("bert", {"bert.pooling_type": 1, "bert.attention.causal": False}, "an encoder"),
            ("nomic-bert", {"nomic-bert.pooling_type": 1}, "an encoder"),
            ("t5encoder", {}, "an encoder"),
            ("qwen3", {"qwen3.pooling_type": 3}, "an embedding model"),
            ("llama", {"llama.attention.causal": False}, "a model whose attention is not causal"),
            ("llada", {}, "a diffusion language model")]


@pytest.mark.parametrize("arch, meta, what", ENCODERS)
def test_generating_verbs_refuse_an_encoder_gguf_in_one_line(tmp_path, capsys, arch, meta, what):
    model = gguf(tmp_path / "minilm-F16.gguf", arch=arch, meta=meta)
    verbs = [["run", str(model), "hello"], ["eval", "ppl", str(model), "-o", str(tmp_path / "e.json")],
             ["bundle", str(model), "-o", str(tmp_path / "dist")]]
    if not any(k.endswith(".pooling_type") for k in meta):  # one with a pooling head, bench measures (issue 37)
        verbs.append(["bench", str(model), "-o", str(tmp_path / "b.json")])
    for verb in verbs:
        code, err, _ = run_main(verb, capsys)
        assert code == 1 and f"minilm-F16.gguf is {what}" in err and "llama-embedding" in err, (verb, err)
        assert len(err.splitlines()) == 1 and "doctor" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["minilm-F16.gguf"]  # no results, no bundle


def test_a_causal_model_passes_the_same_check(tmp_path):
    from edgeq.sources.gguf import require_generator

    require_generator(gguf(tmp_path / "llm.gguf", meta={"llama.attention.causal": True}), "x")
    require_generator(gguf(tmp_path / "qwen-emb-off.gguf", arch="qwen3", meta={"qwen3.pooling_type": 0}), "x")


@pytest.mark.parametrize("config, extra, what", [
    ({"architectures": ["BertModel"]}, None, "(BertModel) is an encoder (architecture 'bert'"),
    ({"architectures": ["XLMRobertaModel"]}, None, "an encoder"),
    ({"architectures": ["NomicBertModel"]}, None, "an encoder (architecture 'bert'"),
    ({"architectures": ["LlamaForCausalLM"], "is_causal": False}, None, "attention is not causal"),
    ({"architectures": ["LLaDAModelLM"]}, None, "a diffusion language model (architecture 'llada')"),
    ({"architectures": ["Qwen2ForCausalLM"]}, [{"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"}],
     "an embedding model (architecture 'qwen2'"),
])
def test_ship_tune_and_bench_refuse_an_encoder_checkpoint_before_converting(tmp_path, capsys, monkeypatch, config,
                                                                             extra, what):
    monkeypatch.chdir(tmp_path)
    ck = write_minimal_checkpoint(tmp_path / "ck", **config)
    if extra:
        (ck / "modules.json").write_text(json.dumps(extra))
        (ck / "1_Pooling").mkdir()
        (ck / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_lasttoken": True}))
    verbs = [["ship", str(ck), "--no-tune", "-o", str(tmp_path / "d")], ["tune", str(ck), "--size", "1G"],
             ["bench", str(ck), "-o", str(tmp_path / "b.json")]]
    if extra:  # a sentence-transformers checkpoint: ship and bench take it as one (issue 37); tune scores logits
        for verb in verbs[::2]:
            code, err, _ = run_main(verb, capsys)
            assert code != 0 and "has no weights" in err and len(err.splitlines()) == 1, (verb, err)
        verbs = verbs[1:2]
    for verb in verbs:
        code, err, _ = run_main(verb, capsys)
        assert code == 1 and what in err and "llama-embedding" in err, (verb, err)
    # Nothing converted, measured or written.
    assert not [p for p in ("models", "d", "b.json", "dist") if (tmp_path / p).exists()]


# --- 8. bench starts no run that does not fit the memory it may use -------------------------------------------------

G = 1024**3


def _cgroup_v2(root: Path, levels: dict[str, tuple[str, str, int]], own: str) -> Path:
    """A cgroup v2 tree in ``root``: per level (memory.max, memory.current, inactive_file); /proc/self/cgroup."""
    (root / "cgroup.controllers").parent.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpu memory\n")
    for rel, (limit, current, inactive) in levels.items():
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        (d / "memory.max").write_text(limit + "\n")
        (d / "memory.current").write_text(current + "\n")
        (d / "memory.stat").write_text(f"anon 1\nfile 2\ninactive_file {inactive}\nactive_file 5\n")
    proc = root.parent / "proc-cgroup"
    proc.write_text(f"0::{own}\n")
    return proc


def test_cgroup_v2_limits_of_the_process_and_its_ancestors(tmp_path):
    from edgeq.system import cgroup_limits, memory_bytes

    root = tmp_path / "cg"
    proc = _cgroup_v2(root, {"a": (str(4 * G), str(3 * G), 0), "a/b": (str(8 * G), str(3 * G), G),
                             "a/b/c": ("max", str(G), 0)}, "/a/b/c")
    assert cgroup_limits(root, proc) == [(8 * G, 2 * G), (4 * G, 3 * G)]  # c has none; b's page cache drops
    total, available = memory_bytes(cgroup_root=root, proc_cgroup=proc)
    assert total == 4 * G and available == min(G, available)  # the tightest level: 4 GiB less 3 held
    host_total, host_avail = memory_bytes(cgroup_root=tmp_path / "none", proc_cgroup=tmp_path / "none")
    assert available <= host_avail and total <= host_total


def test_cgroup_v2_inside_a_container_reads_the_mount_itself(tmp_path):
    from edgeq.system import cgroup_limits

    root = tmp_path / "cg"
    proc = _cgroup_v2(root, {".": (str(2 * G), str(G // 2), 0)}, "/kubepods/pod1/abc")  # the host's path
    assert cgroup_limits(root, proc) == [(2 * G, G // 2)]
    (root / "memory.max").write_text("max\n")
    assert cgroup_limits(root, proc) == []


def test_cgroup_v1_memory_controller(tmp_path):
    from edgeq.system import cgroup_limits

    root = tmp_path / "cg"
    d = root / "memory" / "docker" / "abc"
    d.mkdir(parents=True)
    (d / "memory.limit_in_bytes").write_text(str(3 * G))
    (d / "memory.usage_in_bytes").write_text(str(2 * G))
    (d / "memory.stat").write_text(f"cache 5\ntotal_inactive_file {G // 2}\n")
    (root / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # the root: no limit
    proc = tmp_path / "proc-cgroup"
    proc.write_text("12:pids:/docker/abc\n4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n0::/\n")
    assert cgroup_limits(root, proc) == [(3 * G, G + G // 2)]
    proc.write_text("3:memory:/\n")  # namespaced: the process sees its own group as the root
    assert cgroup_limits(root, proc) == []
    assert cgroup_limits(root, tmp_path / "no-such-file") == []


def test_bench_skips_what_does_not_fit_with_the_numbers(tmp_path):
    from edgeq.benchmarking.fit import too_big
    from edgeq.benchmarking.results import RunSpec

    model = write_small_gguf(tmp_path / "m-Q8_0.gguf", name="m", add_bos=True)
    ck = _sparse_checkpoint(tmp_path / "ck", 3_000_000_000)
    common = dict(device="cpu", threads=1, batch=1, n_prompt=8, n_gen=4, reps=1, prompts={"en": "hi"})
    specs = [RunSpec("m", str(model), "llama.cpp", "Q8_0", **common),  # type: ignore[arg-type]
             RunSpec("ck", str(ck), "transformers", "fp32", **common),  # type: ignore[arg-type]
             RunSpec("ck", str(ck), "transformers", "bnb-nf4", **common)]  # type: ignore[arg-type]
    skips = too_big(specs, int(7.2 * G))
    assert list(skips) == [1] and skips[1].startswith("needs 11.7 GiB, 7.2 GiB available")
    assert too_big(specs, 100 * G) == {}
    assert sorted(too_big(specs, 1024)) == [0, 1, 2]


def test_bench_starts_no_worker_for_runs_that_do_not_fit(tmp_path, monkeypatch, capsys):
    import edgeq.system

    total, _ = edgeq.system.memory_bytes()
    monkeypatch.setattr(edgeq.system, "memory_bytes", lambda **kw: (total, 1 << 20))  # a 1 MiB container
    model = write_small_gguf(tmp_path / "m-Q8_0.gguf", name="m", add_bos=True)
    code, err, out = run_main(["bench", str(model), "--hf", "", "--batch", "1", "-r", "1", "-p", "8", "-n", "4",
                               "-o", str(tmp_path / "b.json"), "--json"], capsys)
    res = json.loads(out)
    assert code == 1 and "no run was measured" in err
    assert {r["status"] for r in res["runs"]} == {"skipped"} and all(r["pid"] is None for r in res["runs"])
    assert "GiB available: not started" in res["runs"][0]["reason"]


# --- 9. a converter failure names the check that failed -------------------------------------------------------------

def _converter_failure(tmp_path: Path, body: str) -> ToolFailed:
    """A real Python traceback from a file laid out like the converter's (conversion/base.py)."""
    from edgeq.llamacpp import run_tool

    src = tmp_path / "conversion" / "base.py"
    src.parent.mkdir(exist_ok=True)
    src.write_text("import sys\n\n\ndef get_vocab_base(vocab, vocab_size):\n" + body + "\n\n"
                   "get_vocab_base({'a': 0, 'b': 70000}, 49152)\n")
    with pytest.raises(ToolFailed) as e:
        run_tool([sys.executable, str(src)], name="convert_hf_to_gguf.py")
    return e.value


@pytest.mark.parametrize("body, reason, fix", [
    ("    assert max(vocab.values()) < vocab_size  # ty: ignore[x]",
     "its check `max(vocab.values()) < vocab_size` failed (conversion/base.py:5, in get_vocab_base)",
     "more tokens than config.json's vocab_size"),
    ("    assert len(vocab) == 3, f'{len(vocab)} tokens'",
     "its check `len(vocab) == 3, f'{len(vocab)} tokens'` failed (2 tokens) (conversion/base.py:5", "config.json"),
    ("    raise KeyError('rope_theta')", "KeyError: 'rope_theta' (conversion/base.py:5, in get_vocab_base)", None),
])
def test_converter_failures_name_the_failing_check_and_the_fix(tmp_path, body, reason, fix):
    from edgeq.llamacpp.converter import converter_error

    err = converter_error(_converter_failure(tmp_path, body), "ck")
    assert err is not None and reason in str(err)
    assert fix is None or fix in (err.hint or "")
    assert isinstance(err, SourceError if "check" in reason else ToolFailed)
    assert err.exit_code == (1 if "check" in reason else 3)


def test_a_failure_without_a_traceback_is_left_as_the_tool_said(tmp_path):
    from edgeq.llamacpp import run_tool
    from edgeq.llamacpp.converter import converter_error

    with pytest.raises(ToolFailed) as e:
        run_tool([sys.executable, "-c", "import sys; print('error: no tokenizer'); sys.exit(1)"], name="c.py")
    assert converter_error(e.value, "ck") is None and e.value.last_line == "error: no tokenizer"


def test_plan_of_a_checkpoint_whose_tokenizer_outgrows_vocab_size(tmp_path, capsys, tiny_llama):
    """The issue's case, end to end through the vendored converter (plan reads no weight)."""
    import shutil

    ck = tmp_path / "ck"
    shutil.copytree(tiny_llama, ck)
    cfg = json.loads((ck / "config.json").read_text())
    cfg["vocab_size"] = 1000  # the tokenizer has 49,152
    (ck / "config.json").write_text(json.dumps(cfg))
    code, err, _ = run_main(["plan", str(ck), "--ram", "8G", "--bandwidth", "50"], capsys)
    assert code == 1 and "its check `max(tokenizer.vocab.values()) < vocab_size` failed" in err, err
    assert "conversion/base.py:" in err and "set vocab_size to at least the tokenizer's size" in err
    assert "see the converter's message" not in err

