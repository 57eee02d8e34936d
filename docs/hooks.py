"""MkDocs hooks: the parts of the site that are generated from the code, so they cannot drift from it.

``<!-- edgeq-options: NAME -->`` becomes mkdocs-click's option reference of ``edgeq NAME``, found through the
CLI group itself (wherever the command's module moves to); ``<!-- edgeq-api -->`` becomes one mkdocstrings entry
per name in ``edgeq.__all__``. The embedded bench run's report (``benchmarks/results/report/``: the tables and
charts ``edgeq report`` made from ``embedded.json``) is served as it is, at ``benchmarks/embedded-report/``.
"""
from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = re.compile(r"^<!-- edgeq-options: ([\w-]+) -->$", re.M)
API = "<!-- edgeq-api -->"
REPORT = ROOT / "benchmarks" / "results" / "report"


def _command_address(name: str) -> tuple[str, str]:
    """The module and attribute that hold ``edgeq NAME``'s Click command (mkdocs-click imports it by them)."""
    from edgeq.cli import cli

    command = cli.commands[name]  # a KeyError names a page for a command that is gone
    module = sys.modules[command.callback.__module__] if command.callback else importlib.import_module("edgeq.cli")
    for attr, value in vars(module).items():
        if value is command:
            return module.__name__, attr
    raise LookupError(f"edgeq {name}: its command is not an attribute of {module.__name__}")


def _options(match: re.Match[str]) -> str:
    name = match.group(1)
    module, attr = _command_address(name)
    return "\n".join(["::: mkdocs-click", f"    :module: {module}", f"    :command: {attr}",
                      f"    :prog_name: edgeq {name}", "    :depth: 1", "    :style: table",
                      "    :list_subcommands: True", ""])


def _api() -> str:
    import edgeq

    names = [n for n in edgeq.__all__ if not n.startswith("_")]
    return "\n\n".join(f"::: edgeq.{n}" for n in names) + "\n"


def on_page_markdown(markdown: str, **_: Any) -> str:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    markdown = OPTIONS.sub(_options, markdown)
    if API in markdown:
        markdown = markdown.replace(API, _api())
    return markdown


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for path in sorted(REPORT.iterdir()):
        if path.suffix in (".md", ".png"):
            files.append(File.generated(config, f"benchmarks/embedded-report/{path.name}", abs_src_path=str(path)))
    return files
