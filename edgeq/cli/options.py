"""Options several commands share, and the one parser of comma-separated values."""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .. import compute, config

T = TypeVar("T")
# Every --threads option's default (system.default_threads).
THREADS_DEFAULT = "default: $EDGEQ_THREADS if set, else the physical cores"


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout (no progress).")(f)


def revision_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--revision", help="Hub branch, tag or commit (default: main).")(f)


def token_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--token", envvar="HF_TOKEN",
                        help="Hugging Face token (default: $HF_TOKEN or `hf auth login`).")(f)


def eval_tokens_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--eval-tokens", type=click.IntRange(1024), default=8192, show_default=True,
                        help="Tokens of the evaluation text to score.")(f)


def _device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value.strip().lower() not in compute.CHOICES:
        # tune took a device of the plan table here before it took the compute device: say where that went.
        raise click.BadParameter(f"{value!r} is not auto, cpu or metal (a device to fit the file to is --for NAME)")
    return value.strip().lower()


def device_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--device auto|cpu|metal: where llama.cpp runs the model, the same way for every verb that runs one
    (``compute.choose`` resolves it; the platform check happens there, so a library call gets it too)."""
    return click.option("--device", "device", metavar="auto|cpu|metal", default="auto", show_default=True,
                        callback=_device,
                        help="Where llama.cpp runs the model: auto (Metal on Apple Silicon, else the CPU), cpu or "
                             "metal; llama.cpp's cross-check tools get the same layers.")(f)


def lora_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--lora, --lora-scale: a LoRA adapter GGUF applied to the model at load time (run, bench, eval)."""
    f = click.option("--lora-scale", type=float, default=1.0, show_default=True,
                     help="Scale of the --lora adapter (llama.cpp's --lora-scaled; 0 turns it off).")(f)
    return click.option("--lora", metavar="ADAPTER.gguf",
                        help="Apply this LoRA adapter GGUF (from `edgeq convert BASE --lora`) to the model.")(f)


def progress_wanted(as_json: bool, quiet: bool = False) -> bool:
    """Progress bars only for a person at a terminal: never under --json, --quiet or a pipe."""
    return config.progress_enabled() and not as_json and not quiet and sys.stderr.isatty()


def split_list(text: str | None) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``; None or "" → []."""
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def comma_list(cast: Callable[[str], T], what: str, *,
               empty_ok: bool = True) -> Callable[[click.Context, click.Parameter, str | None], list[T]]:
    """A click callback: the option's text as a list of ``cast`` values, or a usage error naming ``what``.

    ``empty_ok=False``: an option given that names nothing (``--types ","``) is an error, not "all": for
    options whose absence means every one, an empty list must not quietly mean the same."""

    def callback(ctx: click.Context, param: click.Parameter, text: str | None) -> list[T]:
        try:
            out = [cast(x) for x in split_list(text)]
        except ValueError as e:
            raise click.BadParameter(f"{text!r} is not a comma-separated list of {what}") from e
        if text is not None and not out and not empty_ok:
            raise click.BadParameter(f"{text!r} names no {what}; leave the option out for all of them")
        return out

    return callback


strings = comma_list(str, "names")
some_strings = comma_list(str, "names", empty_ok=False)
integers = comma_list(int, "integers")
numbers = comma_list(float, "numbers")


def rpc_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--rpc, --no-local, --tensor-split: layers over llama.cpp RPC servers (run, bench)."""
    f = click.option("--tensor-split", callback=numbers, metavar="W,W,...",
                     help="Share of layers per device: this machine first (unless --no-local), then each server. "
                          "Default: equal.")(f)
    f = click.option("--no-local", is_flag=True, help="Put every layer on the RPC servers, none on this machine.")(f)
    return click.option("--rpc", metavar="HOST:PORT,...",
                        help="Split the model's layers over these `edgeq rpc-server` workers (trusted network only).")(f)
