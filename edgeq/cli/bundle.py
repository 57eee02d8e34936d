"""`edgeq bundle`: the click face of ``edgeq.bundle``."""
from __future__ import annotations

import click

from ..bundling import DEFAULT_PROMPT, DEFAULT_TOKENS
from ..bundling import bundle as run_bundle
from ..output import echo, print_json, print_table
from .options import THREADS_DEFAULT, json_option, progress_wanted


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--arch", default="aarch64", show_default=True, help="The board's architecture (aarch64 Linux).")
@click.option("-o", "--outdir", type=click.Path(file_okay=False), help="Deploy folder (default: dist/<model>-<arch>/).")
@click.option("--force", is_flag=True, help="Let -o be a folder of other files: its recorded files are replaced.")
@click.option("--check", is_flag=True,
              help="Run the bundle under qemu at each CPU level and compare it with this machine's build.")
@click.option("--check-rpc", is_flag=True,
              help="Also: this machine's client with every layer on the bundle's ggml-rpc-server under qemu.")
@click.option("--prompt", default=DEFAULT_PROMPT, show_default=True, help="The checks' prompt.")
@click.option("-n", "--n-predict", type=click.IntRange(1, 512), default=DEFAULT_TOKENS, show_default=True,
              help="Tokens the checks generate.")
@click.option("--threads", type=click.IntRange(1, 1024), help=f"Threads for the checks ({THREADS_DEFAULT}).")
@json_option
def bundle(model: str, arch: str, outdir: str | None, force: bool, check: bool, check_rpc: bool, prompt: str, n_predict: int,
           threads: int | None, as_json: bool) -> None:
    """Write MODEL (a GGUF) with llama.cpp cross-built for an ARM board, in one folder to copy there."""
    res = run_bundle(model, arch=arch, outdir=outdir, check=check, rpc=check_rpc, prompt=prompt, n_predict=n_predict,
                     threads=threads, progress=progress_wanted(as_json), force=force)
    if as_json:
        print_json(res)
        return
    echo(f"bundle: {res.folder} ({res.model}, {len(res.binaries)} files in bin/ for {res.arch}; "
         f"needs glibc ≥ {res.glibc_min} and libstdc++ with GLIBCXX_{res.glibcxx_min}; built in {res.build_s:.0f} s)")
    echo(f"CPU levels: {', '.join(res.levels)} (ggml loads the best the board has)")
    if res.envelope and res.envelope.level:
        e = res.envelope
        echo(f"this machine's own {e.level} level against its best: KLD {e.kld_mean:.2e}, top-1 {e.top1_pct:.2f}%; "
             f"so the bounds: KLD ≤ {e.max_kld_mean:.2e}, top-1 ≥ {e.min_top1_pct:.1f}%")
    if res.checks:
        print_table(f"checked under qemu against this machine ({res.check_s or 0:.0f} s; speeds under emulation mean nothing)",
                    ["run", "CPU level (loaded)", "qemu CPU", "same text", "KLD mean", "top-1 %", "passed"],
                    [[c.what, f"{c.level} ({c.loaded_level or '-'})", c.qemu_cpu,
                      "yes" if c.same_text else f"no (from char {c.first_difference})",
                      f"{c.kld_mean:.2e}" if c.kld_mean is not None else "-",
                      f"{c.top1_pct:.2f}" if c.top1_pct is not None else "-", "yes" if c.passed else "NO"]
                     for c in res.checks])
    echo(f"copy it to the board and run: {res.folder}/run.sh \"prompt\"; `edgeq verify {res.folder}` checks it first")
