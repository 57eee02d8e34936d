"""`edgeq bundle`: the one folder a deployment script copies to an ARM board, and proof that it computes there what
it computes here.

    dist/<Model>-aarch64/
      <Model>.gguf               the model (hard-linked where the disk allows)
      bin/                       llama.cpp cross-built for the board: llama-completion, llama-simple, llama-bench,
                                 llama-perplexity, ggml-rpc-server, edgeq-bandwidth, their libraries, ggml's
                                 CPU levels (the best one for the board is loaded) and OpenMP's runtime
      run.sh                     starts the model with bin/llama-completion
      edgeq-manifest.json        the model's record, and the binaries' (architecture, CPU levels, the glibc and
                                 libstdc++ they need, sha256 of each):
                                 `edgeq verify` checks both

``check`` runs the bundled binaries here under qemu, once per CPU level, on an emulated CPU with that level's
features, and compares them with this machine's own build: the greedy text for a prompt, and the logits over a
short text (top-1 agreement and KL divergence, llama-perplexity's).  Emulation says nothing about speed.
"""
from __future__ import annotations

import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import manifest
from ..errors import UsageError, VerifyFailed
from ..files import (
    atomic_output,
    check_output_folder,
    ensure_folder,
    folder_lock,
    missing_file,
    place_file,
    safe_name,
)
from ..llamacpp import cross, find_toolchain, llama_cpp_version
from ..output import note, one_line
from ..sources import gguf
from ..sources.gguf import require_generator
from .check import DEFAULT_PROMPT, DEFAULT_TOKENS, Envelope, TextCheck, check_folder, why_failed


@dataclass
class BundleResult:
    folder: str
    model: str
    arch: str
    levels: list[str]
    glibc_min: str
    glibcxx_min: str
    binaries: list[str]
    build_s: float
    checks: list[TextCheck] = field(default_factory=list)
    envelope: Envelope | None = None
    check_s: float | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


def bundle(model: str | Path, *, arch: str = "aarch64", outdir: str | Path | None = None, check: bool = False,
           rpc: bool = False, prompt: str = DEFAULT_PROMPT, n_predict: int = DEFAULT_TOKENS, threads: int | None = None,
           progress: bool = False, force: bool = False) -> BundleResult:
    """Write ``model``'s deploy folder for ``arch`` (cross-building llama.cpp first if needed); ``check`` it under qemu.

    ``outdir`` must be new, empty or an earlier bundle (whose model this one replaces); ``force`` lets it be
    another folder, whose recorded files then go.  Raises ``VerifyFailed`` when a check fails (the folder is
    written all the same: the result says what differed).
    """
    src = Path(model)
    if not src.is_file():
        raise UsageError(f"{src} {missing_file(src, noun='GGUF file')}.", hint="Pass a .gguf file (e.g. one `edgeq convert` wrote).")
    t = cross.target(arch)
    cross.require_host(t)  # a Mac: one line naming what it needs, before anything is read or written
    if (check or rpc) and not prompt.strip():
        raise UsageError("--prompt is empty: the checks compare the text each build generates after it.",
                         hint="Pass a prompt, or leave --prompt out for the default.")
    if n_predict < 1 or (threads is not None and threads < 1):
        raise UsageError("-n and --threads must be at least 1.")
    info = gguf.read(src)  # a whole GGUF, or one clear error
    require_generator(src, "a bundle runs it with llama-completion")
    pair = _projector(src)
    folder = Path(outdir) if outdir else Path("dist") / f"{safe_name(src.stem)}-{t.arch}"
    # Every refusal before the cross build, which takes minutes when cold.
    check_output_folder(folder)
    manifest.claim(folder, "bundle", force=force)
    ensure_folder(folder)
    t0 = time.monotonic()
    cross.build(t.arch, on_line=_build_progress(t.arch) if progress else None)
    build_s = time.monotonic() - t0
    with folder_lock(folder, doing="writes its bundle"):
        old = manifest.claim(folder, "bundle", force=force)  # again: another run may have written it since
        bins = write_bin(folder, t.arch)
        manifest.remove_replaced(folder, old, src.name, force=force)  # a bundle holds one model
        place_file(src, folder / src.name)
        for name in pair:  # a vision-language model's projector goes with it
            place_file(src.parent / name, folder / name)
        _write_manifest(folder, src, info, bins)
        write_run_sh(folder / "run.sh", src.name, ctx=min(info.context_length or 4096, 4096), threads=None)
    res = BundleResult(folder=str(folder), model=src.name, arch=t.arch, levels=bins.levels, glibc_min=bins.glibc_min,
                       glibcxx_min=bins.glibcxx_min,
                       binaries=sorted(bins.files), build_s=build_s)
    ver = manifest.verify(folder)
    if not ver.passed:
        raise VerifyFailed(f"the bundle {folder} does not match its manifest: "
                           f"{', '.join(ver.mismatched + ver.missing + ver.linked)}.", hint="Run the same bundle again.")
    if check or rpc:
        t1 = time.monotonic()
        res.envelope, res.checks = check_folder(folder, local=check, rpc=rpc, prompt=prompt, n_predict=n_predict,
                                                threads=threads, progress=progress)
        res.check_s = time.monotonic() - t1
        if not res.passed:
            bad = next(c for c in res.checks if not c.passed)
            raise VerifyFailed(f"the {t.arch} build ({bad.level}, {bad.what}) does not compute what this machine's does: "
                               f"{why_failed(bad, res.envelope)}.", hint="Report it with the folder's edgeq-manifest.json; do not deploy it.")
    return res


def _build_progress(arch: str) -> Callable[[str], None]:
    """Shows the cross build's progress every 10% (a cold build takes minutes; a warm one, seconds)."""
    shown = [-10]

    def on_line(line: str) -> None:
        # Only lines that compile or link: an up-to-date build prints "Built target" lines, which are no news.
        if (m := re.match(r"\[\s*(\d+)%\] (Building|Linking)", line)) and int(m.group(1)) >= shown[0] + 10:
            shown[0] = int(m.group(1))
            note(f"building llama.cpp for {arch}: {shown[0]}%")
    return on_line


def write_bin(folder: Path, arch: str) -> cross.Binaries:
    """``folder/bin``: the cross-built tools for ``arch`` (built if needed), written whole or not at all."""
    dest = folder / "bin"
    with tempfile.TemporaryDirectory(dir=folder, prefix=".bin-") as tmp:
        bins = cross.copy_binaries(arch, Path(tmp) / "bin")
        old = folder / ".bin-old"
        if dest.exists():
            dest.rename(old)
        (Path(tmp) / "bin").rename(dest)
        if old.exists():
            shutil.rmtree(old)
    return bins


def _projector(src: Path) -> list[str]:
    """The projector the manifest beside ``src`` pairs it with, if any (refused when it is gone)."""
    made = manifest.load(src.parent)
    if made is None or src.name not in made.files:
        return []
    names = [n for n in manifest.with_projector(made, src.name) if n != src.name]
    for name in names:
        if not (src.parent / name).is_file():
            raise UsageError(f"{src.name}'s projector {name}, which its manifest pairs with it, is missing.",
                             hint="Run `edgeq convert` again to remake it.")
    return names


def _write_manifest(folder: Path, src: Path, info: gguf.GGUFInfo, bins: cross.Binaries) -> None:
    """The model's record (from the folder it came from when edgeq made it) and the binaries'."""
    made = manifest.load(src.parent)
    if made is not None and src.name in made.files:
        mf = manifest.Manifest(source=made.source, llama_cpp=made.llama_cpp, options=dict(made.options),
                               files=manifest.with_projector(made, src.name))
    else:
        mf = manifest.Manifest(source={"gguf": str(src.resolve())}, llama_cpp=llama_cpp_version(find_toolchain()),
                               options={}, files={src.name: manifest.record(folder / src.name, info.file_type or "?",
                                                                            info.bits_per_weight, "bundle")})
    mf.options["bundle"] = binaries_record(bins)
    manifest.save(folder, mf)


def binaries_record(bins: cross.Binaries) -> dict[str, object]:
    """What the manifest says of a folder's ``bin/``: architecture, CPU levels (with the boards they suit), glibc, ..."""
    t = cross.target(bins.arch)
    return {**asdict(bins), "levels": [{"name": v, "features": t.levels[v].features, "boards": t.levels[v].boards}
                                       if v in t.levels else {"name": v} for v in bins.levels]}


def write_run_sh(path: Path, gguf_name: str, *, ctx: int, threads: int | None) -> None:
    """``run.sh``: the model with ``bin/llama-completion`` beside it when there is one, else the one on PATH.

    The file name is the one thing in it from outside: shell-quoted where it runs, and on one line in the
    comment (a newline in a name would otherwise start a command of its own)."""
    ctx, threads = int(ctx), int(threads) if threads else None
    text = f"""#!/bin/sh
# Written by edgeq: runs {one_line(gguf_name)} with llama.cpp's own llama-completion.
#   ./run.sh "Your prompt" [more llama-completion options]
# LLAMA_COMPLETION=/path/to/llama-completion picks the binary (default: bin/ here, else the one on PATH).
here="$(cd "$(dirname "$0")" && pwd)"
exe="${{LLAMA_COMPLETION:-$here/bin/llama-completion}}"
[ -x "$exe" ] || exe=llama-completion
prompt="${{1:-Hello}}"
[ $# -gt 0 ] && shift
exec "$exe" -m "$here/"{shlex.quote(gguf_name)} -c {ctx}{f" -t {threads}" if threads else ""} -n "${{N_PREDICT:-128}}" \\
  -no-cnv --no-display-prompt -p "$prompt" "$@"
"""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o755)


__all__ = ["DEFAULT_PROMPT", "DEFAULT_TOKENS", "BundleResult", "Envelope", "TextCheck", "binaries_record", "bundle",
           "check_folder", "write_bin", "write_run_sh"]
