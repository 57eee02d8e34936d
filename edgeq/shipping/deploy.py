"""The deploy folder ``ship`` writes: what a box needs to run the chosen file, and the evidence for choosing it.

    dist/<Model>/
      <Model>-<type>.gguf          the chosen file (hard-linked from the work folder where the disk allows)
      edgeq-manifest.json          its record, so `edgeq verify` and `edgeq upload` work on the folder
      imatrix/, *.tensor-types.txt the importance matrix and (a tuned file's) recipe it was made with
      README.md                    the model card (`upload`'s), with the recommendation
      results/                     eval, bench and plan results the choice rests on
      report/report.md             tables and charts of them
      run.sh                       starts the model with llama.cpp's own llama-completion (bin/'s, if any)
      bin/                         for a device of another architecture (a Raspberry Pi 5): llama.cpp built
                                   for it, as `edgeq bundle` writes it
      ship.json                    the ship result
"""
from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path
from typing import Any

from .. import manifest
from ..bundling import binaries_record, write_bin, write_run_sh
from ..errors import VerifyFailed
from ..files import atomic_output, place_file, write_json_atomic
from ..llamacpp import cross
from ..output import md_text
from ..reporting import report
from ..reporting.tables import cell
from ..uploading import companions, model_name
from ..uploading.card import Published, render
from ..uploading.measured import measure
from .result import Option, ShipResult


def write_folder(folder: Path, work: Path, chosen: Option, result: ShipResult, results: list[Path],
                 plan: dict[str, Any], threads: int, repo_id: str, *, force: bool = False) -> None:
    """Write (or bring up to date) the deploy folder of ``chosen``, then verify it.

    The folder holds one model: an earlier ship's pick goes, if edgeq left it as it wrote it; a folder of
    another kind (a convert folder's quants) is refused (``manifest.claim``) unless ``force``."""
    old = manifest.claim(folder, "ship", force=force)
    folder.mkdir(parents=True, exist_ok=True)
    src = Path(chosen.file)
    wmf = manifest.load(work)
    assert wmf is not None and src.name in wmf.files  # convert and tune recorded it
    manifest.remove_replaced(folder, old, src.name, force=force)
    place_file(src, folder / src.name)
    mf = manifest.Manifest(source=wmf.source, llama_cpp=wmf.llama_cpp,
                           options={**{k: v for k, v in wmf.options.items() if k != "tuned"},
                                    "ship": {"target": result.target, "ctx": result.ctx, "chosen": chosen.label}},
                           files=manifest.with_projector(wmf, src.name))  # a VLM's projector too (_extras copies it)
    tuned = (wmf.options.get("tuned") or {}) if isinstance(wmf.options.get("tuned"), dict) else {}
    if src.name in tuned:  # type: ignore[operator]
        mf.options["tuned"] = {src.name: tuned[src.name]}  # type: ignore[index]
    arch = result.target.get("arch")
    if isinstance(arch, str) and arch in cross.TARGETS and arch != platform.machine():
        mf.options["bundle"] = binaries_record(write_bin(folder, arch))
    elif old and "bundle" in old.options and (folder / "bin").is_dir():  # an earlier target's binaries
        shutil.rmtree(folder / "bin")
    manifest.save(folder, mf)
    extra = _extras(work, folder, src)
    saved = _results(folder, results, plan)
    measured = measure({src.name: chosen.size_bytes}, saved)
    pub = Published(src.name, mf.files[src.name], [src.name])
    card = render(mf, folder, repo_id, [pub], measured, extra, preface=preface(result, chosen))
    with atomic_output(folder / "README.md") as tmp:
        tmp.write_text(card, encoding="utf-8")
    report(saved, folder / "report")
    write_run_sh(folder / "run.sh", src.name, ctx=result.ctx, threads=threads)
    check = manifest.verify(folder)
    if not check.passed:
        raise VerifyFailed(f"the deploy folder {folder} does not match its manifest: "
                           f"{', '.join(check.mismatched + check.missing + check.linked)}.",
                           hint="Run the same ship again; it rewrites the folder.")


def _extras(work: Path, folder: Path, src: Path) -> list[str]:
    """The importance matrix and tune's recipe the chosen file was made with, copied beside it."""
    out = []
    for in_repo, path in companions(work, src.name):
        (folder / in_repo).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / in_repo)
        out.append(in_repo)
    return out


def _results(folder: Path, results: list[Path], plan: dict[str, Any]) -> list[Path]:
    """Copies of the eval and bench results and the chosen file's plan, under ``results/``."""
    dest = folder / "results"
    dest.mkdir(exist_ok=True)
    out = []
    for p in results:
        kind = json.loads(p.read_text())["schema"].split("/")[0].removeprefix("edgeq-")
        out.append(dest / f"{kind}.json")
        shutil.copyfile(p, out[-1])
    out.append(dest / "plan.json")
    write_json_atomic(out[-1], plan)
    return out


def default_repo(name: str, label: str) -> str:
    """The repo the card's usage lines name before there is one: ``your-name/<Model>-GGUF``."""
    return f"your-name/{model_name(name, label)}-GGUF"


def preface(result: ShipResult, chosen: Option) -> list[str]:
    """The card's "Recommended" section: the pick, why, and every candidate's figures, measured or predicted."""
    where = ("this machine" if result.target["here"]
             else md_text(f"{result.target['name']} ({result.target['description']})"))
    lines = ["## Recommended", "",
             f"For {where} at a context of {result.ctx:,}: **{md_text(chosen.label)}**. {md_text(result.sentence)}"]
    if result.runner_up:
        lines.append(f"Runner-up: {md_text(result.runner_up)}.")
    lines += [""] + [f"> {md_text(n)}" for n in result.notes] + ([""] if result.notes else [])
    lines += ["| file | size | KLD | ΔPPL % | top-1 % | tg tok/s here | RAM on target at ctx | tg tok/s on target |",
              "|---|---|---|---|---|---|---|---|"]
    for o in result.options:
        mark = "▶ " if o.label == chosen.label else ""
        lines.append(f"| {mark}{cell(md_text(o.label))} | {o.size_bytes / 2**20:.1f} MiB | "
                     f"{'reference' if o.label == 'F16' else _n(o.kld_mean, '.4g')} | {_n(o.delta_ppl_pct, '+.2f')} | "
                     f"{_n(o.top1_pct, '.1f')} | {_n(o.tg_tps_here, '.1f')} | {o.ram_target_bytes / 2**20:.0f} MiB "
                     f"(predicted){'' if o.fits else ', does not fit'} | {o.tg_tps_target:.1f} "
                     f"({'measured here' if o.tg_measured else 'predicted'}) |")
    return [*lines, ""]


def _n(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)
