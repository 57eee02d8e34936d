"""Commands that get and make model files: doctor, download, convert, inspect, verify."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from .. import config
from ..conversion import convert as run_convert
from ..diagnosis import doctor as run_doctor
from ..errors import ToolchainError, VerifyFailed
from ..llamacpp.quantize import Overrides, parse_keep_layers, parse_tensor_type
from ..manifest import verify as run_verify
from ..output import echo, human_bytes, note, print_json, print_table
from ..sources.gguf import GGUFInfo, read
from ..sources.hub import download as run_download
from ..sources.projector import describe_pair
from .options import device_option, json_option, progress_wanted, revision_option, token_option


@click.command()
@device_option
@json_option
def doctor(device: str, as_json: bool) -> None:
    """Check the toolchain: versions, tools, CPU features, RAM and disk."""
    rep = run_doctor(device)
    if as_json:
        print_json(rep)
    else:
        print_table("versions", ["component", "version"], [[k, v] for k, v in rep.versions.items()])
        print_table("checks", ["check", "ok", "detail"],
                    [[c.name, "yes" if c.ok else "NO", c.detail + (f" — {c.fix}" if c.fix else "")] for c in rep.checks])
        s = rep.system
        print_table("machine", ["fact", "value"], [
            ["cpu", f"{s.cpu} ({s.physical_cores} cores / {s.logical_cores} threads)"],
            ["cpu features", " ".join(s.cpu_features) or "-"], ["metal", "yes" if s.metal else "no"],
            ["threads edgeq uses", rep.threads], ["smoke test on", rep.device], ["rpc", "yes" if rep.rpc else "no"],
            ["RAM free / total", f"{human_bytes(s.ram_available_bytes)} / {human_bytes(s.ram_total_bytes)}"],
            ["disk free (models dir)", human_bytes(rep.disk_free_bytes)],
            ["llama.cpp sees", rep.llama_system_info or "-"]])
    if not rep.ok:
        bad = next(c for c in rep.checks if not c.ok)
        if as_json:
            raise click.exceptions.Exit(3)
        raise ToolchainError(f"{bad.name}: {bad.detail}.", hint=bad.fix)


@click.command()
@click.argument("repo_id")
@revision_option
@token_option
@click.option("--local-dir", type=click.Path(file_okay=False), help="Put the files here instead of the HF cache.")
@json_option
def download(repo_id: str, revision: str | None, token: str | None, local_dir: str | None, as_json: bool) -> None:
    """Download the files conversion needs (safetensors, config, tokenizer)."""
    res = run_download(repo_id, revision=revision, token=token, local_dir=local_dir, progress=progress_wanted(as_json))
    if as_json:
        print_json(res)
    else:
        echo(res.path)


@click.command()
@click.argument("source", required=False)
@click.option("--q8", is_flag=True, help="Make Q8_0.")
@click.option("--q4", is_flag=True, help="Make Q4_K_M.")
@click.option("--quant", "quant", multiple=True, metavar="TYPE",
              help="Any llama.cpp type (Q4_K_S, Q5_K_M, Q6_K, Q4_0, IQ4_NL, F16...); repeatable or comma-separated.")
@click.option("--outtype", type=click.Choice(["f16", "bf16", "f32"]), default=config.DEFAULT_OUTTYPE, show_default=True,
              help="Float type of the intermediate GGUF the quants are made from.")
@click.option("-o", "--outdir", type=click.Path(file_okay=False), help="Output folder (default: models/<name>/).")
@click.option("--name", help="File-name stem (default: the repo or folder name).")
@click.option("--force", is_flag=True, help="Redo outputs even if up to date.")
@click.option("--keep-f16/--no-keep-f16", default=True, show_default=True, help="Keep the intermediate float GGUF.")
@click.option("--threads", type=click.IntRange(1, 1024), help="Threads for llama-quantize.")
@revision_option
@token_option
@click.option("--allow-pickle", is_flag=True, help="Accept .bin/.pth weights (loaded with weights_only=True).")
@click.option("--keep-layers", multiple=True, metavar="LAYERS=TYPE",
              help="Keep these layers at another type in every quant, e.g. 0-3=F16 (repeatable).")
@click.option("--keep-output", is_flag=True, help="Keep the output tensor at F16.")
@click.option("--output-type", metavar="TYPE", help="Type of the output tensor (e.g. Q8_0).")
@click.option("--embeddings-type", metavar="TYPE", help="Type of the token-embedding tensor (e.g. F16).")
@click.option("--imatrix", is_flag=True, help="Quantize with an importance matrix computed by llama-imatrix.")
@click.option("--calibration", type=click.Path(dir_okay=False),
              help="Text for --imatrix (default: a Shakespeare play that `edgeq eval` does not use).")
@click.option("--imatrix-chunks", type=click.IntRange(1), default=config.DEFAULT_IMATRIX_CHUNKS, show_default=True,
              help="512-token chunks of calibration text to use.")
@click.option("--lora", metavar="ADAPTER",
              help="Also write this PEFT LoRA adapter (folder or repo id) as a GGUF against SOURCE, its base.")
@click.option("--merge-lora", metavar="ADAPTER",
              help="Make every output from SOURCE with this PEFT LoRA adapter merged in (folder or repo id).")
@click.option("--lora-scale", type=float, default=1.0, show_default=True, help="Scale of the --merge-lora adapter.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.option("-v", "--verbose", is_flag=True, help="Say where the seconds went for each output (tool, header, sha256).")
@json_option
def convert(source: str | None, q8: bool, q4: bool, quant: tuple[str, ...], outtype: str, outdir: str | None,
            name: str | None, force: bool, keep_f16: bool, threads: int | None, revision: str | None,
            token: str | None, allow_pickle: bool, keep_layers: tuple[str, ...], keep_output: bool,
            output_type: str | None, embeddings_type: str | None, imatrix: bool, calibration: str | None,
            imatrix_chunks: int, lora: str | None, merge_lora: str | None, lora_scale: float, quiet: bool,
            verbose: bool, as_json: bool) -> None:
    """Convert SOURCE (repo id or HF folder; default: the embedded SmolLM2-135M) to GGUF and quantize it."""

    if keep_output and output_type:
        raise click.UsageError("--keep-output and --output-type both set the output tensor; pick one.")
    if calibration and not imatrix:
        raise click.UsageError("--calibration only applies with --imatrix.")
    overrides = Overrides(keep_layers=tuple(parse_keep_layers(k) for k in keep_layers),
                          output_type="F16" if keep_output else
                          (parse_tensor_type(output_type, "--output-type") if output_type else None),
                          embeddings_type=parse_tensor_type(embeddings_type, "--embeddings-type")
                          if embeddings_type else None, imatrix=imatrix)
    quants = (["Q8_0"] if q8 else []) + (["Q4_K_M"] if q4 else []) + list(quant)
    res = run_convert(source, quants=quants or list(config.DEFAULT_QUANTS), outtype=outtype, outdir=outdir,
                      name=name, keep_f16=keep_f16, force=force, threads=threads, revision=revision,
                      token=token, allow_pickle=allow_pickle, overrides=overrides, calibration=calibration,
                      imatrix_chunks=imatrix_chunks, progress=progress_wanted(as_json, quiet), lora=lora,
                      merge_lora=merge_lora, lora_scale=lora_scale)
    if as_json:
        print_json(res)
        return
    rows = [[o.variant, Path(o.path).name, human_bytes(o.size_bytes), f"{o.bits_per_weight:.2f}",
             "reused" if o.reused else f"{o.seconds:.1f}",
             ", ".join(f"{t} {s:.0%}" for t, s in o.tensor_types.items() if s >= 0.005)] for o in res.outputs]
    rows += [[o.variant, Path(o.path).name, human_bytes(o.size_bytes), f"{o.bits_per_weight:.2f}",
              "reused" if o.reused else f"{o.seconds:.1f}", "projector (mmproj)"] for o in res.projectors]
    print_table(f"edgeq convert → {res.outdir}/",
                ["type", "file", "size", "bits/weight", "seconds", "tensor types"], rows)
    note(f"{res.llama_cpp}; manifest: {res.manifest}")
    if res.merged_lora:
        note(f"every file holds the adapter {res.merged_lora.adapter} merged in at scale {res.merged_lora.scale:g}")
    if res.adapter:
        a = res.adapter
        note(f"adapter: {a.path} ({human_bytes(a.size_bytes)}, rank {a.rank}, alpha {a.alpha:g}, {a.tensors} tensors"
             f"{', reused' if a.reused else ''}); run it with `edgeq run MODEL.gguf --lora {a.path} PROMPT`")
    if res.convert_peak_rss_bytes:
        note(f"converter peak RSS: {human_bytes(res.convert_peak_rss_bytes)} (lazy: one tensor at a time)")
    for n in res.notes:
        note("note: " + n)
    if verbose:
        for o in res.outputs:
            if o.stages:
                note(f"{o.variant}: " + ", ".join(f"{k} {v:.2f} s" for k, v in o.stages.items()))


@click.command()
@click.argument("path", type=click.Path())
@json_option
def inspect(path: str, as_json: bool) -> None:
    """Show a GGUF's architecture, size, bits per weight and tensor types."""
    info = read(path)
    pair = describe_pair(Path(path))  # a vision-language model's other file
    if as_json:
        print_json({**asdict(info), **pair} if pair else info)
        return
    print_table(None, ["field", "value"], [
        ["file", info.path], ["architecture", info.architecture], ["name", info.name or "-"], ["file type", info.file_type or "-"],
        ["parameters", f"{info.parameters:,}"], ["file size", human_bytes(info.file_size_bytes)],
        ["bits per weight", f"{info.bits_per_weight:.3f}"], ["context length", info.context_length or "-"],
        ["embedding length", info.embedding_length or "-"], ["layers", info.block_count or "-"],
        ["tokenizer", info.tokenizer_model or "-"], ["add BOS", info.add_bos_token],
        ["tensors", info.tensor_count], *_pair_rows(pair), *_embedding_rows(info)])
    print_table("tensor types", ["type", "tensors", "share of parameters", "size"],
                [[t, s.tensors, f"{s.parameters / info.parameters:.1%}", human_bytes(s.bytes)]
                 for t, s in info.tensor_types.items()])


def _pair_rows(pair: dict[str, object]) -> list[list[object]]:
    proj = pair.get("projector")
    if isinstance(proj, dict):
        return [["projector type", proj["projector_type"]], ["image size", f"{proj['image_size']} px"],
                ["patch size", f"{proj['patch_size']} px"], ["projects to width", proj["output_width"]],
                ["text models (manifest)", ", ".join(proj["models"]) or "- (pass it with --mmproj)"]]
    if "paired_projector" in pair:
        missing = "" if pair["paired_projector_exists"] else " (MISSING)"
        return [["projector (manifest)", f"{Path(str(pair['paired_projector'])).name}{missing}"]]
    return []


def _embedding_rows(info: GGUFInfo) -> list[list[object]]:
    """A sentence-embedding model's head: what a caller must apply to get the model's vectors."""
    e = info.embedding
    if e is None:
        return []
    return [["embedding dimension", e.dimension or "-"], ["pooling", e.pooling],
            ["normalize (L2)", e.normalize], ["max sequence length", e.max_seq_length or "-"]]


@click.command()
@click.argument("folder", type=click.Path())
@json_option
def verify(folder: str, as_json: bool) -> None:
    """Re-hash every file in a convert folder against its manifest (exit 1 on mismatch)."""

    res = run_verify(folder)
    if as_json:
        print_json({**res.__dict__, "passed": res.passed})
    else:
        for n in res.ok:
            echo(f"ok        {n}")
        for n in res.mismatched:
            echo(f"MISMATCH  {n}")
        for n in res.missing:
            echo(f"MISSING   {n}")
        for n in res.linked:
            echo(f"SYMLINK   {n}")
    if not res.passed:
        bad = res.mismatched + res.missing + res.linked
        err = VerifyFailed(f"{len(bad)} file(s) in {folder} do not match the manifest: {', '.join(bad)}.",
                           hint="Re-run `edgeq convert --force` or re-copy the folder"
                                + (" (with the files, not links to them)." if res.linked else "."))
        if as_json:
            raise click.exceptions.Exit(err.exit_code)
        raise err


