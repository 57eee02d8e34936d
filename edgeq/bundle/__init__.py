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

from .. import manifest, system
from ..errors import UsageError, VerifyFailed
from ..files import atomic_output, ensure_folder, folder_lock, missing_file, place_file, safe_name
from ..llamacpp import cpu_variants, cross, find_toolchain, level_bin_dir, llama_cpp_version, run_tool
from ..output import note
from ..sources import gguf
from ..sources.texts import default_text

DEFAULT_PROMPT = "The three most useful things to pack for a week of hiking are"
DEFAULT_TOKENS = 32
# The logits check: windows of llama-perplexity over the start of the default evaluation text, scored here (the
# reference) and by the bundled llama-perplexity under emulation.  Only the start goes in: the tool tokenizes
# all it is given, which under emulation costs more than the scoring.
CHECK_CTX, CHECK_WINDOWS = 128, 4
CHECK_CHARS = CHECK_CTX * CHECK_WINDOWS * 10  # English runs about 4 characters a token
# "The same computation up to floating-point order" is measured, not assumed: the bundle's logits may be no
# further from this machine's best CPU level than this machine's own levels are from each other (x64 against
# zen4: another kernel, another order of sums), with a margin.  That spread is large where activations are
# quantized differently (Q4_0 on the 135M model: KLD 0.005, top-1 92%) and tiny elsewhere, hence the floors.
# A real difference is far outside (tests/test_bundle.py's control: another quantization of the same model).
KLD_MARGIN, TOP1_MARGIN_PTS = 2.0, 3.0
MAX_KLD_FLOOR, MIN_TOP1_CEILING = 1e-3, 97.0


@dataclass
class Envelope:
    """How far this machine's own CPU levels are from each other on the model, and the bounds that makes."""

    level: str | None  # this machine's level furthest from its best one (None: the build has one level)
    kld_mean: float
    top1_pct: float
    max_kld_mean: float
    min_top1_pct: float


@dataclass
class TextCheck:
    """One run of the bundle under emulation against this machine's build."""

    what: str  # "local" (the board runs the model) or "rpc" (this machine's client, the board's rpc-server)
    level: str  # the CPU level asked for
    qemu_cpu: str
    loaded_level: str | None  # the CPU level ggml loaded, from its log: must equal ``level``
    text_here: str
    text_target: str
    same_text: bool
    first_difference: int | None  # character index where the two texts part, None if equal
    # rpc runs: the text equals the emulated board's own local run with the kernels its RPC server uses (weights
    # not repacked): the protocol itself must change nothing, whatever the two architectures.
    same_as_board: bool | None = None
    kld_mean: float | None = None  # logits over CHECK_WINDOWS × CHECK_CTX tokens
    kld_p99: float | None = None
    top1_pct: float | None = None
    passed: bool = False


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
           progress: bool = False) -> BundleResult:
    """Write ``model``'s deploy folder for ``arch`` (cross-building llama.cpp first if needed); ``check`` it under qemu.

    Raises ``VerifyFailed`` when a check fails (the folder is written all the same: the result says what differed).
    """
    src = Path(model)
    if not src.is_file():
        raise UsageError(f"{src} {missing_file(src, noun='GGUF file')}.", hint="Pass a .gguf file (e.g. one `edgeq convert` wrote).")
    info = gguf.read(src)  # a whole GGUF, or one clear error
    t = cross.target(arch)
    folder = ensure_folder(Path(outdir) if outdir else Path("dist") / f"{safe_name(src.stem)}-{t.arch}")
    t0 = time.monotonic()
    cross.build(t.arch, on_line=_build_progress(t.arch) if progress else None)
    build_s = time.monotonic() - t0
    with folder_lock(folder, doing="writes its bundle"):
        bins = write_bin(folder, t.arch)
        old = manifest.load(folder)
        for name in (old.files if old else {}):  # an earlier bundle of another model: a bundle holds one
            if name != src.name:
                (folder / name).unlink(missing_ok=True)
        place_file(src, folder / src.name)
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
                               f"{_why(bad, res.envelope)}.", hint="Report it with the folder's edgeq-manifest.json; do not deploy it.")
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


def _write_manifest(folder: Path, src: Path, info: gguf.GGUFInfo, bins: cross.Binaries) -> None:
    """The model's record (from the folder it came from when edgeq made it) and the binaries'."""
    made = manifest.load(src.parent)
    if made is not None and src.name in made.files:
        mf = manifest.Manifest(source=made.source, llama_cpp=made.llama_cpp, options=dict(made.options),
                               files={src.name: made.files[src.name]})
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
    """``run.sh``: the model with ``bin/llama-completion`` beside it when there is one, else the one on PATH."""
    text = f"""#!/bin/sh
# Written by edgeq: runs {gguf_name} with llama.cpp's own llama-completion.
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


def check_folder(folder: Path, *, local: bool = True, rpc: bool = False, prompt: str = DEFAULT_PROMPT,
                 n_predict: int = DEFAULT_TOKENS, threads: int | None = None,
                 levels: list[str] | None = None, progress: bool = False) -> tuple[Envelope, list[TextCheck]]:
    """Run a bundle's binaries under qemu at each of its CPU levels and compare them with this machine's build.

    Returns the envelope (this machine's own levels against each other: the bounds) and one check per run.
    """
    from ..quality.crosscheck import llama_perplexity_kld  # numpy: not while the CLI starts

    mf = manifest.load(folder)
    rec = (mf.options.get("bundle") if mf else None) or {}
    if not isinstance(rec, dict) or "arch" not in rec:
        raise UsageError(f"{folder} is not a bundle (its manifest records no binaries).",
                         hint="Make one with `edgeq bundle MODEL.gguf`.")
    assert mf is not None
    t = cross.target(str(rec["arch"]))
    model = folder / next(iter(mf.files))
    threads = threads or system.default_threads()
    here, _ = _generate([find_toolchain().tool("llama-completion")], model, prompt, n_predict, threads)
    text = default_text()[0][:CHECK_CHARS]
    env = envelope(model, text, threads) if local else Envelope(None, 0.0, 100.0, MAX_KLD_FLOOR, MIN_TOP1_CEILING)
    out = []
    for level in levels or [v["name"] for v in rec["levels"]]:
        emu = cross.emulator(t, level)
        if progress:
            note(f"checking the {t.arch} build at CPU level {level} under qemu ({t.levels[level].qemu_cpu}); "
                 "emulation is slow, and says nothing of the board's speed")
        if local:
            board, loaded = _generate([*emu, folder / "bin" / "llama-completion"], model, prompt, n_predict, threads)
            kld = llama_perplexity_kld(model, model, text, ctx=CHECK_CTX, windows=CHECK_WINDOWS, threads=threads,
                                       model_tool=[*emu, folder / "bin" / "llama-perplexity"])
            out.append(_judge("local", t, level, loaded, here, board, kld, env))
        if rpc:
            target, kld, log = _over_rpc([*emu, folder / "bin" / "ggml-rpc-server"], model, prompt, n_predict,
                                         threads, text)
            same_kernels, _ = _generate([*emu, folder / "bin" / "llama-completion"], model, prompt, n_predict, threads,
                                        extra=("--no-repack",))
            out.append(_judge("rpc", t, level, cross.loaded_level(log), here, target, kld, env, board=same_kernels))
    return env, out


def envelope(model: Path, text: str, threads: int) -> Envelope:
    """Score ``model`` with each of this machine's CPU levels against its best one; the furthest sets the bounds."""
    from ..quality.crosscheck import llama_perplexity_kld  # numpy: not while the CLI starts

    tc = find_toolchain()
    worst: tuple[str | None, dict[str, float]] = (None, {"kld_mean": 0.0, "top1_pct": 100.0})
    with tempfile.TemporaryDirectory(prefix="edgeq-levels-") as tmp:
        for level in cpu_variants(tc):
            d = level_bin_dir(tc, level, Path(tmp) / level)
            k = llama_perplexity_kld(model, model, text, ctx=CHECK_CTX, windows=CHECK_WINDOWS, threads=threads,
                                     model_tool=[d / "llama-perplexity"])
            if k.get("kld_mean", 0.0) > worst[1]["kld_mean"]:
                worst = (level, k)
    kld, top1 = worst[1]["kld_mean"], worst[1].get("top1_pct", 100.0)
    return Envelope(worst[0], kld, top1, max(MAX_KLD_FLOOR, KLD_MARGIN * kld), min(MIN_TOP1_CEILING, top1 - TOP1_MARGIN_PTS))


def _generate(tool: list[str | Path], model: Path, prompt: str, n: int, threads: int,
              extra: tuple[str, ...] = ()) -> tuple[str, str | None]:
    """Greedy text from ``tool`` (llama-completion, maybe under qemu), and the CPU level ggml loaded for it."""
    levels: list[str] = []

    def on_line(line: str) -> None:
        if level := cross.loaded_level([line]):
            levels.append(level)

    with tempfile.TemporaryDirectory(prefix="edgeq-bundle-") as tmp:
        out = Path(tmp) / "text"
        # -lv 5: the info line naming the CPU backend loaded comes before llama-completion's own log starts.
        run_tool([*tool, "-m", model, "-p", prompt, "-n", str(n), "--temp", "0", "--seed", "0", "-c", "512",
                  "-t", str(threads), "-no-cnv", "--no-display-prompt", "--no-warmup", "-lv", "5", *extra],
                 stdout=out, on_line=on_line, timeout=1800)
        return out.read_text(encoding="utf-8", errors="replace"), levels[0] if levels else None


def _over_rpc(server: list[str | Path], model: Path, prompt: str, n: int, threads: int,
              text: str) -> tuple[str, dict[str, float], list[str]]:
    """This machine's tools with every layer on the emulated board's ggml-rpc-server: greedy text, logits, its log."""
    from ..quality.crosscheck import llama_perplexity_kld  # numpy: not while the CLI starts

    tc = find_toolchain()
    with cross.background_server(server, threads) as (endpoint, log):
        remote = ("--rpc", endpoint, "-ngl", "999")
        target, _ = _generate([tc.tool("llama-completion")], model, prompt, n, threads, extra=remote)
        kld = llama_perplexity_kld(model, model, text, ctx=CHECK_CTX, windows=CHECK_WINDOWS, threads=threads,
                                   model_tool=[tc.tool("llama-perplexity"), *remote])
    return target, kld, log


def _judge(what: str, t: cross.Target, level: str, loaded: str | None, here: str, target: str,
           kld: dict[str, float], env: Envelope, *, board: str | None = None) -> TextCheck:
    first = next((i for i, (a, b) in enumerate(zip(here, target)) if a != b),
                 None if len(here) == len(target) else min(len(here), len(target)))
    c = TextCheck(what=what, level=level, qemu_cpu=t.levels[level].qemu_cpu, loaded_level=loaded, text_here=here,
                  text_target=target, same_text=first is None, first_difference=first,
                  same_as_board=None if board is None else target == board,
                  kld_mean=kld.get("kld_mean"), kld_p99=kld.get("kld_p99"), top1_pct=kld.get("top1_pct"))
    # The logits decide: greedy text parts wherever two tokens are nearly tied and the order of sums differs,
    # which is why it is shown but not required against this machine.  Over RPC the board computes with the
    # kernels its server has (weights not repacked), and the text must be exactly that local run's.
    c.passed = (bool(here.strip()) and bool(target.strip()) and loaded == level and c.kld_mean is not None
                and c.top1_pct is not None and c.kld_mean <= env.max_kld_mean and c.top1_pct >= env.min_top1_pct
                and c.same_as_board is not False)
    return c


def _why(c: TextCheck, env: Envelope) -> str:
    if c.loaded_level != c.level:
        return f"ggml loaded CPU level {c.loaded_level or 'none'} on an emulated {c.qemu_cpu}"
    if not (c.text_here.strip() and c.text_target.strip()):
        return "one side generated no text"
    if c.same_as_board is False:
        return "over RPC its text is not that of its own local run with the same kernels (no repacking)"
    return f"KLD {c.kld_mean} (bound {env.max_kld_mean:.3g}), top-1 {c.top1_pct}% (bound {env.min_top1_pct:.3g}%)"


__all__ = ["BundleResult", "Envelope", "TextCheck", "envelope", "bundle", "check_folder", "write_bin", "write_run_sh"]
