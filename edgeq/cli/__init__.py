"""The `edgeq` command: parse, call one library function, render. Nothing else lives here.

One file per command group (as in huggingface_hub/cli/), shared options in
``options``; this one holds the group, wires the commands and is the single
error handler.
"""
from __future__ import annotations

import json
import signal
import sys

import click

from .. import config
from .._version import __version__
from ..errors import EXIT_INTERRUPTED, EXIT_USAGE, EdgeqError
from ..output import echo
from ..system import use_small_pages
from . import bench as _bench
from . import bundle as _bundle
from . import embeddings as _embeddings
from . import eval as _eval
from . import models as _models
from . import plan as _plan
from . import run as _run
from . import ship as _ship
from . import tune as _tune
from . import upload as _upload


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeq")
def cli() -> None:
    """Download, convert and quantize Hugging Face LLMs to GGUF with a pinned llama.cpp."""


def _report(err: EdgeqError, as_json: bool) -> int:
    if as_json:
        click.echo(json.dumps(err.to_dict()))
    else:
        echo(f"Error: {err}", err=True)
    return err.exit_code


def _sigterm(signum: int, frame: object) -> None:
    # Treat SIGTERM like Ctrl-C so the same cleanup (temporary files, child tools) runs.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line per error, stable exit codes (see README)."""
    args = sys.argv[1:] if argv is None else argv
    # The command-line program owns its process: numpy's pages are chosen here, before anything imports
    # numpy (``import edgeq`` itself changes nothing; its children get the choice from the one process door).
    use_small_pages()
    as_json = "--json" in args
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        # Without standalone mode click *returns* the code of a raised Exit (verify/doctor --json use it).
        code = cli.main(args=args, prog_name="edgeq", standalone_mode=False)
        if type(code) is int and code:  # noqa: E721 - a command returning True is not an exit code
            sys.exit(code)
    except EdgeqError as e:
        if config.debug():
            raise
        sys.exit(_report(e, as_json))
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        sys.exit(_report(_interrupted(), as_json))
    except KeyboardInterrupt:
        sys.exit(_report(_interrupted(), as_json))
    except click.ClickException as e:
        code = EXIT_USAGE if isinstance(e, click.UsageError) else e.exit_code
        message = " ".join(e.format_message().split())  # one line, always
        ctx = getattr(e, "ctx", None)
        if ctx is not None:
            message += f" (see `{ctx.command_path} --help`)"
        if as_json:
            click.echo(json.dumps({"error": "usage", "message": message, "exit_code": code}))
        else:
            echo(f"Error: {message}", err=True)
        sys.exit(code)


def _interrupted() -> EdgeqError:
    err = EdgeqError("interrupted; finished files were kept and partial ones removed.",
                     hint="Run the same command again to continue.")
    err.exit_code = EXIT_INTERRUPTED
    err.kind = "interrupted"
    return err


# One module per group of commands, wired here, so no command module imports this one.
cli.add_command(_bench.bench)
cli.add_command(_bench.report)
cli.add_command(_bundle.bundle)
cli.add_command(_eval.eval_group)
_eval.eval_group.add_command(_embeddings.eval_embeddings)
cli.add_command(_models.doctor)
cli.add_command(_models.download)
cli.add_command(_models.convert)
cli.add_command(_models.inspect)
cli.add_command(_models.verify)
cli.add_command(_plan.plan)
cli.add_command(_run.run)
cli.add_command(_run.rpc_server)
cli.add_command(_ship.ship)
cli.add_command(_tune.tune)
cli.add_command(_upload.upload)
