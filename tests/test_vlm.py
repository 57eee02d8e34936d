"""Vision-language models (issue 38): convert writes the text model and its projector, recorded together;
inspect shows the pair; run --image generates; the F16 pair's logits equal transformers fp32; bad inputs are
refused in one line.  The tiny models and their conversions are made once (``vlms``); see ``vlmmatrix``."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_main
from vlmmatrix import CASES, check, passes, write_image

from edgeq.config import MANIFEST_NAME as MANIFEST

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vlms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    rows = {}
    for name in CASES:
        work = tmp_path_factory.mktemp(name.split()[0])
        rows[name] = check(name, work) | {"work": work}
    return rows


@pytest.mark.parametrize("name", list(CASES))
def test_the_f16_pair_matches_transformers_on_an_image_and_text(vlms, name):
    row = vlms[name]
    assert passes(row), {k: v for k, v in row.items() if k not in ("covers", "work")}
    assert row["projector_types"] == ["F16", "Q8_0"] and row["image_tokens"] > 0


def test_the_manifest_records_the_pair_and_inspect_shows_it(vlms, capsys):
    row = vlms["smolvlm (idefics3)"]
    model, proj = Path(row["pair"]["F16"]), Path(row["pair"]["mmproj"])
    files = json.loads((model.parent / MANIFEST).read_text())["files"]
    assert files[model.name]["projector"] == proj.name and files[model.name]["role"] == "model"
    assert {n for n, r in files.items() if r["role"] == "projector"} == {proj.name, "mmproj-hf-Q8_0.gguf"}
    code, err, out = run_main(["inspect", "--json", str(model)], capsys)
    assert code == 0, err
    assert Path(json.loads(out)["paired_projector"]).name == proj.name
    code, err, out = run_main(["inspect", "--json", str(model.parent / "mmproj-hf-Q8_0.gguf")], capsys)
    assert code == 0, err
    shown = json.loads(out)["projector"]
    assert shown["projector_type"] == "idefics3" and shown["file_type"] == "Q8_0" and shown["models"] == [model.name]
    assert shown["output_width"] == 64 and shown["image_size"] == 32
    code, err, _ = run_main(["verify", str(model.parent)], capsys)
    assert code == 0, err


def test_run_image_generates_from_the_converted_pair(vlms, capsys, tmp_path):
    row = vlms["smolvlm (idefics3)"]
    pic = write_image(tmp_path / "pic.png", 2)
    code, err, out = run_main(["run", row["pair"]["F16"], "--image", str(pic), "describe", "-n", "8"], capsys)
    assert code == 0, err
    assert out.strip() and "image 8 tokens (2 slices)" in err
    code, err, out = run_main(["run", row["pair"]["F16"], "--image", str(pic), "--mmproj", row["pair"]["mmproj_q8"],
                               "describe", "-n", "4", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["image_tokens"] == 8 and res["mmproj"] == row["pair"]["mmproj_q8"] and res["generated_tokens"] >= 1
    code, err, out = run_main(["run", row["pair"]["F16"], "--image", str(pic), "--chat", "describe", "-n", "4",
                               "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["prompt_tokens"] > res["prompt_tokens"]  # the template's turn markers around it


def test_bad_inputs_are_refused_in_one_line(vlms, capsys, tmp_path):
    smol, gemma = vlms["smolvlm (idefics3)"]["pair"], vlms["gemma3 (vision)"]["pair"]
    pic = write_image(tmp_path / "pic.png", 3)
    not_image = tmp_path / "notes.png"
    not_image.write_text("a text file named like an image\n")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(smol["F16"], alone / "m-F16.gguf")  # a model without its folder's manifest
    gone = tmp_path / "gone"
    gone.mkdir()
    shutil.copy(smol["F16"], gone / Path(smol["F16"]).name)
    shutil.copy(Path(smol["F16"]).parent / MANIFEST, gone / MANIFEST)  # pairs a projector not here
    cases = [
        (["run", smol["mmproj"], "--image", str(pic), "describe"], 1, "is a multimodal projector (mmproj), not a model"),
        (["run", smol["mmproj"], "hello"], 1, "is a multimodal projector (mmproj), not a model"),
        (["bench", smol["mmproj"], "-r", "1"], 1, "is a multimodal projector (mmproj), not a model"),
        (["run", smol["F16"], "--image", str(not_image), "describe"], 2, "is not an image"),
        (["run", str(alone / "m-F16.gguf"), "--image", str(pic), "describe"], 2, "has no multimodal projector"),
        (["run", str(gone / Path(smol["F16"]).name), "--image", str(pic), "describe"], 1,
         "which the manifest pairs with it, does not exist"),
        (["run", smol["F16"], "--image", str(pic), "--mmproj", gemma["mmproj"], "describe"], 2,
         "it is another model's projector"),
        (["run", smol["F16"], "--mmproj", smol["mmproj"], "describe"], 2, "pass --image FILE too"),
    ]
    for args, want, says in cases:
        code, err, out = run_main(args, capsys)
        assert (code, len(err.splitlines())) == (want, 1) and says in err, (args, code, err)
        assert not out.strip()


def test_a_projector_the_converter_cannot_write_leaves_nothing_half_written(vlms, capsys, tmp_path):
    """transformers 5 saves Gemma 3's vision tower one level above where its checkpoints keep it, and the
    converter cannot map those names: one line, exit 3 (the tool failed), the finished text model recorded, no
    projector file."""
    from safetensors.torch import load_file, save_file

    src = tmp_path / "hf"
    shutil.copytree(vlms["gemma3 (vision)"]["work"] / "hf", src)
    tensors = load_file(src / "model.safetensors")
    save_file({k.replace("vision_tower.vision_model.", "vision_tower."): v for k, v in tensors.items()},
              src / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "out"
    code, err, _ = run_main(["convert", str(src), "--quant", "F16", "-o", str(out), "-q"], capsys)
    assert code == 3 and "Can not map tensor 'vision_tower.embeddings" in err, err
    assert len([ln for ln in err.splitlines() if ln.startswith("Error:")]) == 1
    assert {p.name for p in out.iterdir() if p.is_file()} == {"hf-F16.gguf", MANIFEST}
    files = json.loads((out / MANIFEST).read_text())["files"]
    assert list(files) == ["hf-F16.gguf"] and files["hf-F16.gguf"]["projector"] is None


@pytest.mark.parametrize("name", list(CASES))
def test_plan_counts_the_projector_and_the_image_tokens_libmtmd_made(vlms, name):
    from edgeq.planning import plan

    row = vlms[name]
    folder = Path(row["pair"]["F16"]).parent
    res = plan(str(folder), quants=["F16"], ram_bytes=8 << 30, bandwidth_gbps=10, fit_params=False)
    assert res.vision is not None and res.vision.projector == Path(row["pair"]["mmproj"]).name
    assert res.vision.image_tokens == row["image_tokens"]  # the rule's count is what run --image measured
    f16 = next(r for r in res.rows if r.quant == "F16")
    assert f16.memory.projector_bytes == res.vision.projector_bytes + res.vision.encoder_compute_bytes
    assert res.vision.projector_bytes == Path(row["pair"]["mmproj"]).stat().st_size
    assert any(f"one image takes {row['image_tokens']} of the" in n for n in res.notes)
    if name != "gemma3 (vision)":
        return  # the checkpoint side once: planning a checkpoint runs the converter's dry run (torch, ~10 s)
    checkpoint = plan(str(row["work"] / "hf"), quants=["F16"], ram_bytes=8 << 30, bandwidth_gbps=10, fit_params=False)
    assert checkpoint.vision is not None and checkpoint.vision.image_tokens == row["image_tokens"]
    # Predicted at F16 from the vision tensors: the file adds its header and the F32 norms and embeddings.
    assert 0.5 < checkpoint.vision.projector_bytes / res.vision.projector_bytes <= 1.0


def test_bench_image_measures_encoding_and_tokens_per_image(vlms, capsys, tmp_path):
    from edgeq.benchmarking.image import bench_image

    row = vlms["gemma3 (vision)"]
    pic = write_image(tmp_path / "pic.png", 4)
    (run,) = bench_image([Path(row["pair"]["F16"])], pic, reps=2, threads=1)
    assert run.status == "ok", run.reason
    assert run.image_tokens == row["image_tokens"] and run.image_chunks == 1 and len(run.encode_ms) == 2
    assert all(ms > 0 for ms in run.encode_ms + run.prefill_ms) and run.mmproj == row["pair"]["mmproj"]
    code, err, _ = run_main(["bench", row["pair"]["F16"], "--image", str(tmp_path / "none.png"),
                             "-o", str(tmp_path / "b.json")], capsys)
    assert code == 2 and "does not exist" in err and not (tmp_path / "b.json").exists()


def test_upload_publishes_the_projector_beside_its_model(vlms, tmp_path, monkeypatch):
    from hubserver import FakeHub, User
    from huggingface_hub import constants

    from edgeq.uploading import upload

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the stand-in speaks plain LFS
    folder = tmp_path / "smol"
    shutil.copytree(Path(vlms["smolvlm (idefics3)"]["pair"]["F16"]).parent, folder)
    hub = FakeHub(users={"hf_w": User("acme")}).start()
    try:
        upload(folder, "acme/smol-vlm", token="hf_w", endpoint=hub.endpoint, progress=False, include=["F16"])
        sent = hub.repos["acme/smol-vlm"].files
    finally:
        hub.stop()
    assert sent["mmproj-hf-F16.gguf"] == (folder / "mmproj-hf-F16.gguf").read_bytes()
    assert "mmproj-hf-Q8_0.gguf" not in sent  # only the projector the published model is paired with
    card = sent["README.md"].decode()
    assert "| `hf-F16.gguf`" in card and "| `mmproj-hf-F16.gguf`" not in card  # listed as a model it is not


def test_bundle_carries_and_records_the_projector(vlms, tmp_path):
    """The aarch64 folder holds the pair, both in its manifest (so verify checks the projector too); a model
    whose paired projector is gone is refused before the cross build."""
    from edgeq.bundling import bundle
    from edgeq.errors import UsageError
    from edgeq.manifest import verify

    smol = vlms["smolvlm (idefics3)"]["pair"]
    res = bundle(smol["F16"], outdir=tmp_path / "b")
    files = json.loads((tmp_path / "b" / MANIFEST).read_text())["files"]
    proj = Path(smol["mmproj"]).name
    assert files[proj]["role"] == "projector" and files[res.model]["projector"] == proj
    assert (tmp_path / "b" / proj).read_bytes() == Path(smol["mmproj"]).read_bytes()
    assert verify(tmp_path / "b").passed
    gone = tmp_path / "gone"
    gone.mkdir()
    shutil.copy(smol["F16"], gone / res.model)
    shutil.copy(Path(smol["F16"]).parent / MANIFEST, gone / MANIFEST)
    with pytest.raises(UsageError, match="which its manifest pairs with it, is missing"):
        bundle(gone / res.model, outdir=tmp_path / "b2")
    assert not (tmp_path / "b2").exists()


def test_ships_deploy_folder_carries_and_records_the_projector(vlms, tmp_path):
    """ship's last step on a VLM pick (the candidates' figures given, as ship's measuring stages would give them):
    the folder holds the pair, recorded together, and verifies."""
    from edgeq.manifest import verify
    from edgeq.output import to_jsonable
    from edgeq.planning import plan
    from edgeq.shipping.deploy import write_folder
    from edgeq.shipping.result import Option, ShipResult

    smol = vlms["smolvlm (idefics3)"]["pair"]
    f16, dst = Path(smol["F16"]), tmp_path / "deploy"
    planned = to_jsonable(plan(str(f16), quants=["F16"], ram_bytes=8 << 30, bandwidth_gbps=10, fit_params=False))
    pick = Option("F16", str(f16), f16.stat().st_size, 16.0, None, None, None, 100.0, 200.0, 1 << 20, 1 << 20,
                  100.0, True, True)
    result = ShipResult("edgeq-ship/1", {}, {"name": "here", "here": True}, 2048, str(dst), "F16", None, "F16", [pick])
    write_folder(dst, f16.parent, pick, result, [], planned, 2, "acme/smol-GGUF")
    files = json.loads((dst / MANIFEST).read_text())["files"]
    proj = Path(smol["mmproj"]).name
    assert files[f16.name]["projector"] == proj and files[proj]["role"] == "projector"
    assert (dst / proj).is_file() and verify(dst).passed
