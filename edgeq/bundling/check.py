"""`edgeq bundle --check`: a bundle's binaries run here under qemu at each CPU level and compared with this
machine's build (greedy text, llama-perplexity's logits), within bounds measured on this machine's own CPU levels."""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import manifest, system
from ..errors import UsageError
from ..llamacpp import cpu_variants, cross, find_toolchain, level_bin_dir, run_tool
from ..llamacpp.rpc_server import background_server
from ..output import note
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
_TIMINGS = re.compile(r"common_perf_print: +total time")  # llama-completion's log, after the text


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


def check_folder(folder: Path, *, local: bool = True, rpc: bool = False, prompt: str = DEFAULT_PROMPT,
                 n_predict: int = DEFAULT_TOKENS, threads: int | None = None,
                 levels: list[str] | None = None, progress: bool = False,
                 bounds: Envelope | None = None) -> tuple[Envelope, list[TextCheck]]:
    """Run a bundle's binaries under qemu at each of its CPU levels and compare them with this machine's build.

    Returns the envelope (this machine's own levels against each other: the bounds) and one check per run.
    ``bounds``: the envelope of this model already measured (``envelope``) with the same ``threads``, which the
    checks then reuse instead of scoring the model at every CPU level here again.
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
    if bounds is None:
        bounds = envelope(model, text, threads) if local else Envelope(None, 0.0, 100.0, MAX_KLD_FLOOR, MIN_TOP1_CEILING)
    env = bounds
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
    runs: list[tuple[str | None, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="edgeq-levels-") as tmp:
        for name in cpu_variants(tc):
            d = level_bin_dir(tc, name, Path(tmp) / name)
            runs.append((name, llama_perplexity_kld(model, model, text, ctx=CHECK_CTX, windows=CHECK_WINDOWS,
                                                     threads=threads, model_tool=[d / "llama-perplexity"])))
    # Each bound from the level furthest on it: top-1 agreement may be lowest at another level than KLD's worst.
    level, worst = max(runs, key=lambda r: r[1]["kld_mean"], default=(None, {"kld_mean": 0.0}))
    kld, top1 = worst["kld_mean"], min((k["top1_pct"] for _, k in runs), default=100.0)
    return Envelope(level if kld > 0 else None, kld, top1, max(MAX_KLD_FLOOR, KLD_MARGIN * kld),
                    min(MIN_TOP1_CEILING, top1 - TOP1_MARGIN_PTS))


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
        # Its timings, logged after the text, prove the text was printed whole (run_tool's until).
        run_tool([*tool, "-m", model, "-p", prompt, "-n", str(n), "--temp", "0", "--seed", "0", "-c", "512",
                  "-t", str(threads), "-no-cnv", "--no-display-prompt", "--no-warmup", "-lv", "5", *extra],
                 stdout=out, on_line=on_line, timeout=1800, until=_TIMINGS)
        return out.read_text(encoding="utf-8", errors="replace"), levels[0] if levels else None


def _over_rpc(server: list[str | Path], model: Path, prompt: str, n: int, threads: int,
              text: str) -> tuple[str, dict[str, float], list[str]]:
    """This machine's tools with every layer on the emulated board's ggml-rpc-server: greedy text, logits, its log."""
    from ..quality.crosscheck import llama_perplexity_kld  # numpy: not while the CLI starts

    tc = find_toolchain()
    with background_server(server, threads) as (endpoint, log):
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


def why_failed(c: TextCheck, env: Envelope) -> str:
    if c.loaded_level != c.level:
        return f"ggml loaded CPU level {c.loaded_level or 'none'} on an emulated {c.qemu_cpu}"
    if not (c.text_here.strip() and c.text_target.strip()):
        return "one side generated no text"
    if c.same_as_board is False:
        return "over RPC its text is not that of its own local run with the same kernels (no repacking)"
    return f"KLD {c.kld_mean} (bound {env.max_kld_mean:.3g}), top-1 {c.top1_pct}% (bound {env.min_top1_pct:.3g}%)"
