"""Commands that run a model: run, rpc-server."""
from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path

import click

from ..errors import EXIT_INTERRUPTED, UsageError
from ..generation import run as run_model
from ..generation.vision import run_image
from ..llamacpp.rpc import DEFAULT_HOST, NO_AUTH_WARNING, layer_ranges
from ..llamacpp.rpc_server import check_bind, check_port, is_loopback, serve
from ..output import note, print_json, printable
from .options import THREADS_DEFAULT, device_option, json_option, lora_options, rpc_options


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("prompt")
@click.option("-n", "n_predict", type=click.IntRange(1), default=128, show_default=True, help="Tokens to generate at most.")
@click.option("--temp", type=click.FloatRange(0), default=0.0, show_default=True, help="Sampling temperature; 0 = greedy.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@click.option("--ctx", "n_ctx", type=click.IntRange(16), default=2048, show_default=True, help="Context size in tokens.")
@click.option("-t", "--threads", type=click.IntRange(1, 1024), help=f"Threads ({THREADS_DEFAULT}).")
@click.option("--chat", is_flag=True, help="Wrap PROMPT in the GGUF's chat template as a user message.")
@click.option("--image", type=click.Path(dir_okay=False),
              help="Generate from this image and PROMPT (a vision-language model: MODEL with its projector).")
@click.option("--mmproj", type=click.Path(dir_okay=False),
              help="The projector for --image (default: the one MODEL's manifest pairs with it).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(1), default=600, show_default=True,
              help="Give up after this many seconds without progress.")
@device_option
@lora_options
@rpc_options
@json_option
def run(model: str, prompt: str, n_predict: int, temp: float, seed: int, n_ctx: int, threads: int | None, chat: bool,
        image: str | None, mmproj: str | None, timeout_s: float, device: str, lora: str | None, lora_scale: float, rpc: str | None, no_local: bool, tensor_split: list[float] | None,
        as_json: bool) -> None:
    """Generate text with MODEL (a GGUF) after PROMPT, streamed to stdout; tok/s on stderr."""

    tty = sys.stdout.isatty()

    def show(text: str) -> None:
        # On a terminal a model's control characters are shown, not obeyed; a pipe gets the text as generated.
        sys.stdout.write(printable(text) if tty else text)
        sys.stdout.flush()

    if image or mmproj:
        _run_image(model, prompt, image, mmproj, show=None if as_json else show, as_json=as_json)
        return
    res = run_model(model, prompt, n_predict=n_predict, temp=temp, seed=seed, n_ctx=n_ctx, threads=threads, chat=chat,
                    rpc=rpc, no_local=no_local, tensor_split=tensor_split or None, on_text=None if as_json else show,
                    timeout_s=timeout_s, device=device, lora=lora, lora_scale=lora_scale)
    if as_json:
        print_json(res)
        return
    click.echo()
    for p in res.placement if res.rpc else []:
        where = f"RPC {p.endpoint}" if p.endpoint else "this machine"
        note(f"{where}: layers {layer_ranges(p.layers, res.n_layer)} · model {p.model_mib:.1f} MiB, "
             f"KV {p.kv_mib:.1f} MiB, compute {p.compute_mib:.1f} MiB")
    note(f"prompt {res.prompt_tokens} tokens, {res.prompt_tps:.1f} tok/s · generation {res.generated_tokens} tokens, "
         f"{res.gen_tps:.1f} tok/s · load {res.load_s:.2f} s · {res.device}"
         + (f" · adapter {Path(res.lora).name} at {res.lora_scale:g}" if res.lora else ""))


def _run_image(model: str, prompt: str, image: str | None, mmproj: str | None, *, show: Callable[[str], None] | None,
               as_json: bool) -> None:
    """``run --image``: the text model and its projector through libmtmd, on this machine's CPU (--device auto
    or cpu; libmtmd's Metal path is not one edgeq has run)."""
    params = click.get_current_context().params
    if not image:
        raise UsageError("--mmproj names the projector for --image; pass --image FILE too.")
    clash = [f"--{k.replace('_', '-')}" for k in ("rpc", "no_local", "tensor_split", "lora") if params.get(k)]
    clash += [f"--device {params['device']}"] if params.get("device") not in (None, "auto", "cpu") else []
    if clash:
        raise UsageError(f"--image runs the model and its projector on this machine's CPU; {', '.join(clash)} "
                         "cannot be combined with it.", hint="Drop those options, or drop --image.")
    res = run_image(model, image, prompt, mmproj=mmproj, n_predict=params["n_predict"], temp=params["temp"],
                    seed=params["seed"], n_ctx=params["n_ctx"], threads=params["threads"], chat=params["chat"],
                    on_text=show, timeout_s=params["timeout_s"])
    if as_json:
        print_json(res)
        return
    click.echo()
    note(f"image {res.image_tokens} tokens ({res.image_chunks} slice{'s' if res.image_chunks > 1 else ''}), "
         f"encoded in {res.image_encode_s * 1000:.1f} ms by {res.mmproj} · prompt {res.prompt_tokens} "
         f"tokens, {res.prompt_tps:.1f} tok/s · generation {res.generated_tokens} tokens, {res.gen_tps:.1f} tok/s "
         f"· load {res.load_s:.2f} s")


@click.command("rpc-server")
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1; anything else needs --allow-remote).")
@click.option("--port", type=click.IntRange(1, 65535), default=50052, show_default=True)
@click.option("-t", "--threads", type=click.IntRange(1, 1024), help=f"CPU threads ({THREADS_DEFAULT}).")
@click.option("--cache", is_flag=True, help="Keep large tensors in a local cache, so reloading a model is fast.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Where --cache keeps them (default ~/.cache/llama.cpp/rpc).")
@click.option("--allow-remote", is_flag=True, help="Listen on a non-loopback --host although ggml-rpc has no authentication.")
def rpc_server(host: str | None, port: int, threads: int | None, cache: bool, cache_dir: str | None,
               allow_remote: bool) -> None:
    """Serve this machine's CPU to `--rpc` runs elsewhere (llama.cpp's ggml-rpc-server) until Ctrl-C."""

    host = host or DEFAULT_HOST
    check_bind(host, allow_remote)
    check_port(host, port)
    if not is_loopback(host):
        note(f"WARNING: {NO_AUTH_WARNING}")
    note(f"rpc-server: listening on {host}:{port}; stop with Ctrl-C")
    stopped = serve(host, port, threads=threads, cache=cache, cache_dir=cache_dir, allow_remote=allow_remote,
                    on_line=lambda line: note(line))
    note("rpc-server: stopped")
    if stopped == signal.SIGINT:
        raise click.exceptions.Exit(EXIT_INTERRUPTED)
