"""`edgeq ship`: from a source to a measured, verified deploy folder and the file to run on the target.

    res = edgeq.ship("HuggingFaceTB/SmolLM2-135M-Instruct", target="m1-8gb")

Stages, each reusing what an earlier run or the single verbs made (so an interrupted ship resumes and a second
``--for`` redoes only the plan and the pick):

1. **convert** the candidates into the model's work folder (``models/<name>/``, as ``convert`` does): the F16
   reference and the stock quants, with the importance matrix where llama.cpp's docs say it helps;
2. **tune**: a ``tune`` file for the target's RAM, unless the widest candidate already fits (then a tuned file
   would only copy it);
3. **quality**: KLD, ΔPPL and top-1 of every candidate against the F16 file on the evaluation text (``eval``):
   half of ``eval_tokens`` first, all of them only where a KLD is too near the bound for half to decide;
4. **speed**: tok/s and peak RAM of every candidate here (``bench``), which also calibrates the plan;
5. **plan** each candidate for the target: its RAM at ``ctx`` and, for another machine, its tok/s;
6. **pick** by ``prefer`` among those that fit and meet ``min_tps``/``max_kld`` (``decide``), and the runner-up;
7. **folder**: the chosen file, manifest, card, report, recipe and imatrix, and ``run.sh``; ``verify``; ``push``.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from .. import compute, manifest
from ..benchmarking.matrix import bench
from ..benchmarking.prompts import DEFAULT_PROMPTS
from ..conversion import convert
from ..conversion.models import require_generator_source
from ..errors import EdgeqError, UsageError
from ..files import write_json_atomic
from ..llamacpp.quantize import Overrides
from ..output import human_bytes, note
from ..planning import devices
from ..planning.objective import DEFAULT_PREFER, NEAR_LOSSLESS_KLD
from ..planning.recommend import Recommendation, check_prefer
from ..planning.source import from_gguf
from ..sources import Source, resolve
from ..sources.sentence import checkpoint_head
from ..system import default_threads, system_info
from ..tuning import tune as run_tune
from ..tuning.allocate import budget_bytes
from ..uploading import upload
from .decide import GENERIC_BANDWIDTH_GBPS, pick, plan_options
from .deploy import default_repo, preface, write_folder
from .embedding import EmbeddingShipResult, ship_embedding
from .preflight import MIN_EVAL_TOKENS, preflight, work_folder
from .result import SCHEMA, Option, ShipResult

STOCK = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M")  # beside the F16 reference
# Where llama.cpp's quantize docs recommend an importance matrix: the K-quants at 5 bits and below, IQ types.
IMATRIX_HELPS = ("Q5_K_S", "Q5_K_M", "Q4_K_S", "Q4_K_M", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q2_K", "IQ4_XS", "IQ4_NL",
                 "IQ3_S", "IQ3_XXS", "IQ2_XS", "IQ2_XXS")
EVAL_TOKENS = 8192
NEAR_BOUND_SE = 3.0  # standard errors from the KLD bound within which the quality stage scores every token
# One prompt: bench's default matrix measures an English and a Hindi one, and the pick reads the first only (the
# second was half the speed stage, measured for nothing).
BENCH = {"n_prompt": 128, "n_gen": 64, "reps": 3}
BENCH_PROMPT = "en"
STAGES = ("convert", "tune", "quality", "speed", "plan", "pick", "folder")


def ship(source: str | None = None, *, target: str | None = None, ram: str | None = None,
         bandwidth_gbps: float | None = None, ctx: int = 4096, quants: list[str] | None = None, tune: bool = True,
         min_tps: float | None = None, max_kld: float | None = None, outdir: str | Path | None = None,
         workdir: str | Path | None = None, push: str | None = None, private: bool = False, token: str | None = None, threads: int | None = None,
         eval_tokens: int = EVAL_TOKENS, revision: str | None = None, progress: bool = True,
         force: bool = False, prefer: str = DEFAULT_PREFER, device: str = "auto") -> ShipResult | EmbeddingShipResult:
    """Make, measure and plan the candidates of ``source`` for ``target``; write the deploy folder of the pick.

    The candidates are made in ``workdir`` (default ``models/<name>/``, where ``convert`` puts them), the deploy
    folder is ``outdir`` (default ``dist/<name>/``): new, empty or an earlier ship's (``force``: any folder).
    The pick is made by ``prefer`` (``plan.objective``: the fastest near-lossless file by default).
    Every option is checked before any model work starts (``preflight``).  ``device`` (auto, cpu, metal) is where
    this machine scores, times and tunes the candidates (``compute.choose``), recorded in the result."""
    check_prefer(prefer)
    on = compute.choose(device)
    ram_bytes, stock, push = preflight(target=target, ram=ram, bandwidth_gbps=bandwidth_gbps, ctx=ctx, quants=quants,
                                       default_quants=STOCK, min_tps=min_tps, max_kld=max_kld, outdir=outdir,
                                       workdir=workdir, push=push, token=token, threads=threads,
                                       eval_tokens=eval_tokens, force=force)
    src = resolve(source, revision=revision, token=token, progress=progress)  # a repo id: downloaded once, here
    if src.is_checkpoint and src.path is not None and checkpoint_head(src.path) is not None:
        return ship_embedding(src, target=target, ram_bytes=ram_bytes, quants=quants, outdir=outdir, workdir=workdir,
                              push=push, private=private, token=token, threads=threads, progress=progress,
                              prefer=prefer, min_eps=min_tps)
    require_generator_source(src, "edgeq ship measures and deploys text generation")
    if outdir is None:  # the default deploy folder is named after the work folder: known only now
        manifest.claim(Path("dist") / work_folder(src, workdir).name, "ship", force=force)
    stages: dict[str, float] = {}
    here = target is None and ram_bytes is None

    def stage(i: int, name: str, what: str) -> float:
        if progress:
            note(f"ship [{i}/{len(STAGES)}] {name}: {what}")
        return time.perf_counter()

    t = stage(1, "convert", f"F16 and {', '.join(stock)} (imatrix where it helps)")
    plain = [q for q in stock if q not in IMATRIX_HELPS]
    base = convert(src, quants=plain or ["F16"], outdir=workdir, revision=revision, token=token, threads=threads,
                   progress=progress)
    work = Path(base.outdir)
    files = {o.variant: Path(o.path) for o in base.outputs}
    imat = [q for q in stock if q in IMATRIX_HELPS]
    if imat:
        res = convert(src, quants=imat, outdir=work, overrides=Overrides(imatrix=True), revision=revision,
                      token=token, threads=threads, progress=progress)
        files.update({o.variant: Path(o.path) for o in res.outputs if o.variant != "F16"})
    stages["convert"] = time.perf_counter() - t
    f16 = files["F16"]
    # This machine is read after the speed stage, with the bandwidth its bench measured: reading it here ran
    # edgeq-bandwidth once more (~3 s a ship, resumed or not) for a figure nothing used.
    dest = None if here else _target(target, ram_bytes, bandwidth_gbps)

    t = stage(2, "tune", f"a file for {dest.name if dest else 'this machine'}'s RAM")
    tuned_note = None
    if tune:
        tuned_note = _tune(src, work, files, target, ram, ctx, threads, progress, revision, token, on.device)
    stages["tune"] = time.perf_counter() - t

    cands = files  # the candidates, the tuned file included
    t = stage(3, "quality", f"KLD of {len(cands) - 1} files to the F16 file on up to {eval_tokens:,} tokens")
    bound = max_kld if max_kld is not None else NEAR_LOSSLESS_KLD
    eval_path = _quality(work, f16, cands, eval_tokens, threads, progress, bound, on.device)
    stages["quality"] = time.perf_counter() - t

    t = stage(4, "speed", f"tok/s and peak RAM of {len(cands)} files here")
    bench_path = _speed(work, cands, threads, progress, on.device)
    stages["speed"] = time.perf_counter() - t
    speed = json.loads(bench_path.read_text())
    measured_gbps = ((speed.get("roofline") or {}).get("bandwidth") or {}).get("read_gbps")
    dest = dest or devices.this_machine(bandwidth_gbps=bandwidth_gbps or measured_gbps or None)

    t = stage(5, "plan", f"each file on {dest.name} at ctx {ctx:,}")
    options, plans = plan_options(cands, eval_path, bench_path, target, ram_bytes, bandwidth_gbps, ctx, here)
    stages["plan"] = time.perf_counter() - t

    t = stage(6, "pick", f"by {prefer} among the files that fit and meet the asks")
    rec, runner = pick(options, device_budget=plans[0]["budget_bytes"] if plans else 0, min_tps=min_tps,
                       max_kld=max_kld, prefer=prefer)
    stages["pick"] = time.perf_counter() - t
    busy = speed.get("busy")
    notes = [n for n in [tuned_note, busy and f"speed stage: {busy}"] if n]
    if not here:
        notes.append(f"{dest.name} is not this machine: its tok/s are predicted by the plan (uncalibrated for that "
                     "device); KLD and every 'here' figure were measured on this machine.")
    src_record = dict(base.source) if isinstance(base.source, dict) else {}
    tgt = {"name": dest.name, "description": dest.description, "ram_bytes": dest.ram_bytes, "here": here,
           "arch": dest.arch}
    folder = Path(outdir) if outdir else Path("dist") / f"{work.name}"
    result = ShipResult(SCHEMA, src_record, tgt, ctx, str(folder), rec.quant if rec.ok else None,
                        runner.quant if runner and runner.ok else None, rec.sentence, options, stages, notes,
                        prefer=prefer, kld_bound=rec.kld_bound, busy=busy, device=on.device)
    if not rec.ok:
        raise NothingFits(rec, result)

    t = stage(7, "folder", f"{folder}: the file, manifest, card, report and run.sh")
    chosen = next(o for o in options if o.label == rec.quant)
    repo = push or default_repo(Path(chosen.file).name, chosen.label)
    # run.sh runs on the target: its cores, not the threads this machine measured with (unless it is the target).
    write_folder(folder, work, chosen, result, [eval_path, bench_path], plans[options.index(chosen)],
                 (threads if here else None) or dest.cores, repo, force=force)
    stages["folder"] = time.perf_counter() - t
    if push:
        up = upload(folder, push, private=private, token=token, progress=progress, preface=preface(result, chosen))
        result.pushed = up.pull_request_url or up.commit_url
    write_json_atomic(folder / "ship.json", result.to_dict())
    return result


class NothingFits(EdgeqError):
    """No candidate fits the target or meets the asks: the closest is named (exit 1)."""

    kind = "nothing-fits"

    def __init__(self, rec: Recommendation, result: ShipResult) -> None:
        super().__init__(rec.sentence, hint="Pass a bigger target (--for/--ram), a smaller --ctx, looser --min-tps/"
                                            "--max-kld, or smaller --quants.")
        self.result = result


def _target(target: str | None, ram_bytes: int | None, bandwidth_gbps: float | None) -> Any:
    """Another machine: a named device or a --ram one (this machine is read after the speed stage)."""
    if target:
        return devices.named(target)
    assert ram_bytes is not None  # ship calls it only for another machine
    return devices.generic(ram_bytes, bandwidth_gbps or GENERIC_BANDWIDTH_GBPS)


def _tune(source: Source, work: Path, files: dict[str, Path], target: str | None, ram: str | None, ctx: int,
          threads: int | None, progress: bool, revision: str | None, token: str | None, device: str) -> str | None:
    """Add a tuned file for the target's RAM to ``files``; or say why there is none."""
    quantized = [p for k, p in files.items() if k != "F16"]
    if not quantized:
        return "no tuned file: no quantized candidate to compare it with (--quants named none)."
    widest = max(quantized, key=lambda p: p.stat().st_size)
    n_params = sum(t.n_elements for t in from_gguf(files["F16"]).tensors)
    # This machine's total RAM, not what is free this minute: the tuned file, and every cached measurement
    # keyed on the set of files, must be the same from one run to the next.
    ram_text = ram or (None if target else f"{system_info().ram_total_bytes}B")
    limit, _, _ = budget_bytes(None, None, ram_text, ctx, target, None, n_params, files["F16"])
    if limit >= widest.stat().st_size:
        return (f"no tuned file: {widest.name} ({human_bytes(widest.stat().st_size)}) already fits the "
                f"{human_bytes(limit)} the target leaves for the weights at ctx {ctx:,}.")
    try:
        res = run_tune(source, size=limit, outdir=work, threads=threads, progress=progress, revision=revision,
                       token=token, compute_device=device)
    except UsageError as e:  # a budget below any file: the pick then says what comes closest
        return f"no tuned file: {e}"
    mf = manifest.load(work)
    assert mf is not None  # tune recorded its file
    files[mf.files[Path(res.output).name].type] = Path(res.output)
    return None


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _sha(path: Path) -> str:
    mf = manifest.load(path.parent)
    return mf.files[path.name].sha256 if mf and path.name in mf.files else str(path.stat().st_size)


def _quality(work: Path, f16: Path, cands: dict[str, Path], tokens: int, threads: int | None, progress: bool,
             bound: float, device: str) -> Path:
    """The eval results of every candidate against the F16 file, measured once per set of files and text.

    Half the tokens first: the pick needs each KLD only on the right side of ``bound``, and at that count the
    standard error is a few percent of the mean.  The full count is scored only when some candidate's KLD lies
    within ``NEAR_BOUND_SE`` standard errors of the bound, where the side could still change."""
    first = _score(work, f16, cands, max(MIN_EVAL_TOKENS, tokens // 2), threads, progress, device)
    if tokens // 2 < MIN_EVAL_TOKENS or not _near(first, bound):
        return first
    return _score(work, f16, cands, tokens, threads, progress, device)


def _near(path: Path, bound: float) -> bool:
    rows = json.loads(path.read_text())["rows"]
    return any(r.get("kld_mean") is not None and abs(r["kld_mean"] - bound) <= NEAR_BOUND_SE * (r.get("kld_stderr") or 0)
               for r in rows)


def _score(work: Path, f16: Path, cands: dict[str, Path], tokens: int, threads: int | None, progress: bool,
           device: str) -> Path:
    from ..quality import default_text, perplexity  # here: the quality package loads numpy
    from ..quality.models import gguf_ref
    from ..quality.results import save

    text, src = default_text()
    path = work / "ship" / f"eval-{_key(sorted(_sha(p) for p in cands.values()), src, tokens)}.json"
    if path.is_file():
        return path
    ref = gguf_ref(f16)
    res = perplexity([ref, *[gguf_ref(p) for k, p in cands.items() if k != "F16"]], text, src, reference=ref,
                     ctx=512, max_tokens=tokens, threads=threads or default_threads(), progress=progress, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(res, str(path))
    return path


def _speed(work: Path, cands: dict[str, Path], threads: int | None, progress: bool, device: str) -> Path:
    """bench's results of every candidate here (batch 1), measured once per set of files, machine and device."""
    info = system_info()
    on = [] if device == "cpu" else [device]  # the CPU's key as before the device was a choice: caches stay valid
    key = _key(sorted(_sha(p) for p in cands.values()), info.cpu, threads, BENCH, BENCH_PROMPT, *on)
    path = work / "ship" / f"bench-{key}.json"
    if path.is_file():
        return path
    tmp = path.with_suffix(".partial.json")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    prompt = tmp.parent / f"{BENCH_PROMPT}.txt"  # bench names a prompt file's prompt by its stem
    prompt.write_text(DEFAULT_PROMPTS[BENCH_PROMPT], encoding="utf-8")
    bench([str(p) for p in cands.values()], hf_variants=[], batches=[1], threads=threads, output=tmp, device=device,
          progress=progress, n_prompt=BENCH["n_prompt"], n_gen=BENCH["n_gen"], reps=BENCH["reps"],
          prompt_file=str(prompt))
    tmp.replace(path)  # whole: an interrupted bench is measured again
    return path


__all__ = ["SCHEMA", "EmbeddingShipResult", "NothingFits", "Option", "ShipResult", "pick", "ship"]
