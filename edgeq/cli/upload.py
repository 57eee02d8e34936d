"""`edgeq upload`: the click face of ``edgeq.upload``."""
from __future__ import annotations

import click

from ..output import echo, human_bytes, print_json, print_table
from ..planning.devices import parse_size
from ..uploading import upload as run_upload
from .options import json_option, progress_wanted, some_strings, token_option


@click.command()
@click.argument("folder", type=click.Path(file_okay=False))
@click.argument("repo_id", required=False)
@click.option("--private", is_flag=True, help="Create the repo private (an existing repo keeps its visibility).")
@click.option("--revision", help="Branch to commit to (default: main); it must exist.")
@click.option("--create-pr", is_flag=True, help="Open a pull request with the files instead of committing to the branch.")
@click.option("--include", callback=some_strings, help="Only these types or file-name globs, comma-separated (Q4_K_M,*Q8_0*).")
@click.option("--exclude", callback=some_strings, help="Not these types or file-name globs (e.g. F16).")
@click.option("--results", multiple=True, type=click.Path(exists=True),
              help="bench/eval/tune results (files or folders) for the card's figures; repeatable.")
@click.option("--max-shard-size", help="Split GGUFs above this size (e.g. 2GB; default: only above the Hub's 50 GB).")
@click.option("--dry-run", is_flag=True, help="Write FOLDER/README.md and list what would be sent; send nothing.")
@token_option
@json_option
def upload(folder: str, repo_id: str | None, private: bool, revision: str | None, create_pr: bool,
           include: list[str] | None, exclude: list[str] | None, results: tuple[str, ...], max_shard_size: str | None,
           dry_run: bool, token: str | None, as_json: bool) -> None:
    """Publish FOLDER's GGUFs to the Hub as REPO_ID (default: <you>/<Model>-GGUF) with a measured model card."""
    res = run_upload(folder, repo_id, private=private, token=token, revision=revision, create_pr=create_pr,
                     include=include or None, exclude=exclude or None, results=list(results),
                     max_shard_size=parse_size(max_shard_size) if max_shard_size else None, dry_run=dry_run,
                     progress=progress_wanted(as_json))
    if as_json:
        print_json(res)
        return
    title = f"upload {'(dry run) ' if dry_run else ''}to {res.repo_id} ({res.revision})"
    print_table(title, ["in the repo", "size"], [[f.path_in_repo, human_bytes(f.size_bytes)] for f in res.files])
    echo(f"model card: {res.card}" + (f" (figures from {', '.join(res.results)})" if res.results else
                                      " (no bench/eval/tune results matched these files: pass --results)"))
    if res.not_measured:
        echo(f"no quality figure for: {', '.join(res.not_measured)}")
    if dry_run:
        echo("dry run: nothing was sent.")
    elif res.pull_request_url:
        echo(f"pull request: {res.pull_request_url}")
    else:
        echo(f"commit: {res.commit_url}")
