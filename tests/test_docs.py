"""The documentation site (mkdocs.yml, docs/): it builds in strict mode, every command and every option of
every command is in it, every public name has its reference, a headless browser shows its start page, and the
README stays a short front door whose links lead into it. The site is built once for the module (about 3 s)."""
from __future__ import annotations

import functools
import html
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click
import pytest
from conftest import REPO

from edgeq.cli import cli

README_MAX_LINES = 200


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built as `mkdocs build --strict` builds it: a broken link, a missing page or a docstring that
    does not parse fails the build."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about MkDocs 2, not a warning of ours
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
                        "-d", str(out)], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def text_of(page: Path) -> str:
    """A built page's article text (no navigation): tags dropped, entities decoded."""
    article = page.read_text(encoding="utf-8").split('<article', 1)[-1].split('</article>', 1)[0]
    return html.unescape(re.sub(r"<[^>]+>", " ", article))


def commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        yield f"{prefix}{name}", command
        if isinstance(command, click.Group):
            yield from commands(command, f"{prefix}{name} ")


def test_the_site_builds_strictly_and_needs_nothing_from_the_internet(site: Path) -> None:
    pages = sorted(site.rglob("*.html"))
    assert (site / "index.html").exists() and len(pages) > 30
    # Read offline too: no web fonts, scripts or styles from elsewhere (links to other sites are fine).
    remote = re.compile(r"""<(?:script|link|img)\b[^>]*\b(?:src|href)=["']?(?:https?:)?//""", re.I)
    assert not [p.relative_to(site) for p in pages if remote.search(p.read_text(encoding="utf-8"))]


def test_every_command_and_every_option_is_in_the_site(site: Path) -> None:
    missing = []
    for name, command in commands(cli):
        top = name.split()[0]
        page = site / "commands" / top / "index.html"
        assert page.exists(), f"edgeq {top} has no page: add docs/commands/{top}.md and put it in mkdocs.yml's nav"
        # The reference generated from the command (under the page's "Options" heading), not the prose above it.
        text = text_of(page).split("Options", 1)[-1]
        missing += [f"edgeq {name}"] if f"edgeq {name}" not in text else []
        for param in command.params:
            missing += [f"edgeq {name} {opt}" for opt in [*param.opts, *param.secondary_opts]
                        if isinstance(param, click.Option) and opt not in text]
        # The why and an example, written by hand above the generated options.
        source = (REPO / "docs" / "commands" / f"{top}.md").read_text(encoding="utf-8")
        assert "```bash" in source.split("## Options")[0] and f"edgeq {top}" in source, top
    assert not missing, missing


def test_every_public_name_has_its_reference(site: Path) -> None:
    import edgeq

    page = (site / "python-api" / "index.html").read_text(encoding="utf-8")
    assert [n for n in edgeq.__all__ if not n.startswith("_") and f'id="edgeq.{n}"' not in page] == []


def test_the_exit_codes_and_json_errors_are_documented() -> None:
    page = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    section = page.split("# Exit codes", 1)[1].split("\n# ", 1)[0]
    for code in ("| 0 ", "| 1 ", "| 2 ", "| 3 ", "| 4 ", "| 130"):
        assert code in section
    assert '{"error": kind, "message": ..., "exit_code": n}' in section


@pytest.fixture
def served(site: Path) -> Iterator[str]:
    """The site over HTTP on a free loopback port, as `mkdocs serve` or any static server shows it."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_address[1]}/"
        server.shutdown()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass


def test_a_headless_browser_shows_the_start_page(served: str, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "no chromium: `apt-get install chromium` (scripts/setup.sh installs it where it can)"
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
                        "--virtual-time-budget=3000", "--dump-dom", served],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    # The page's own content, laid out by the theme, after its scripts ran:
    heading = re.search(r"<h1[^>]*>(.*?)</h1>", dom, re.S)
    assert heading and "edgeq" in heading.group(1)
    words = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())
    assert "one pinned llama.cpp" in words and "make demo" in words and "Getting started" in words
    assert 'class="md-content"' in dom
    assert "md-search" in dom  # the theme's search box, which its JavaScript wires up
    # ... and no error: not chromium's error page, no uncaught script error in the console.
    assert "ERR_" not in dom and "404" not in (heading.group(1) if heading else "")
    assert "Uncaught" not in r.stderr, [ln for ln in r.stderr.splitlines() if "Uncaught" in ln]


def test_the_readme_is_a_short_front_door_into_the_site() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_MAX_LINES
    assert "make demo" in readme and "make test" in readme
    links = re.findall(r"\]\((?!https?://|#)([^)#\s]+)", readme)
    assert any(link.startswith("docs/") for link in links)
    assert [link for link in links if not (REPO / link).exists()] == []
    # No measured figure lives only in the README: its tables are command output or come from the docs.
    assert "<!--" not in readme


MARKER = re.compile(r"<!-- ([\w-]+):begin -->\n(.*?)<!-- \1:end -->", re.S)


def generated_tables() -> Iterator[tuple[Path, str, str]]:
    """Every table a benchmark script published into the docs: (page, name, what is between its markers)."""
    for page in sorted((REPO / "docs").rglob("*.md")):
        for m in MARKER.finditer(page.read_text(encoding="utf-8")):
            yield page, m.group(1), m.group(2)


def test_every_generated_table_is_the_one_its_script_published() -> None:
    """readme_table.publish writes a table both between its markers and to results/NAME.md; a hand edit of
    the page's copy (or a marker no script fills) makes the two differ."""
    tables = list(generated_tables())
    assert len(tables) >= 15
    for page, name, inner in tables:
        where = f"{page.relative_to(REPO)}: {name}"
        assert "\n|---" in inner, f"{where}: no table between the markers"
        published = REPO / "benchmarks" / "results" / f"{name}.md"
        assert published.exists(), f"{where}: no {published.relative_to(REPO)}: which script publishes it?"
        assert inner.strip("\n") == published.read_text(encoding="utf-8").strip("\n"), \
            f"{where} differs from what its script published: render it again"


def _expand(path: str) -> list[str]:
    """``a.{json,txt}`` → ``a.json``, ``a.txt`` (the pages' shorthand)."""
    m = re.search(r"\{([^}]*)\}", path)
    return [p for alt in m.group(1).split(",") for p in _expand(path[:m.start()] + alt + path[m.end():])] if m else [path]


# Pages whose benchmark has kept no results file yet: they say so and quote no figure. Once the file exists,
# the page must name it and carry its table (this set's entry then fails the test until removed).
NO_RUN_KEPT = {"convert-memory.md": "convert_memory.json"}


def test_every_benchmark_page_names_its_command_and_results_that_exist() -> None:
    for page in sorted((REPO / "docs" / "benchmarks").glob("*.md")):
        text = page.read_text(encoding="utf-8")
        if page.name == "index.md":
            continue
        if page.name in NO_RUN_KEPT:
            assert not (REPO / "benchmarks" / "results" / NO_RUN_KEPT[page.name]).exists(), \
                f"{page.name}: its results file exists now: put its table in the page, drop it from NO_RUN_KEPT"
            assert "No run kept yet" in text and not re.search(r"\d+(\.\d+)? ?(MiB|GiB|s)\b", text), page.name
            continue
        named = [p for ref in re.findall(r"`(benchmarks/results/[^`\s]+)`", text) for p in _expand(ref)]
        assert named, f"{page.name} names no results file"
        assert [p for p in named if not (REPO / p).exists()] == [], page.name
        scripts = re.findall(r"benchmarks/(\w+\.(?:py|sh))", text)
        assert scripts and all((REPO / "benchmarks" / s).exists() for s in scripts), page.name
        assert "AMD EPYC" in text, f"{page.name} does not say which machine ran it"
