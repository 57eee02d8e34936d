"""Fetch the files conversion needs from the Hugging Face Hub (``snapshot_download``)."""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import config
from ..errors import HubError, UsageError

# owner/name as the Hub allows it: ASCII letters, digits, "-", "_" and "."; each part starts with a letter or
# digit and ends with a letter, digit or "_"; at most 96 characters; no "--" or ".."; not ending in ".git"
# (huggingface_hub's validate_repo_id).  re.ASCII: "\w" alone would let "modèle" through to the Hub's HTTP 400.
_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}\w)?"
_REPO_ID = re.compile(rf"^(?:{_PART}/)?{_PART}$", re.ASCII)
LOGIN_HINT = "Run `hf auth login`, or pass --token / set HF_TOKEN, with a token that has access."


@dataclass
class DownloadResult:
    path: str
    repo_id: str | None
    revision: str | None  # commit sha the files came from
    files: list[str] = field(default_factory=list)
    local: bool = False


def is_repo_id(text: str) -> bool:
    return repo_id_problem(text) is None


def repo_id_problem(text: str) -> str | None:
    """Why ``text`` cannot be a Hub repo id (one phrase), or None when it can."""
    if not text.isascii():
        return "the Hub allows only ASCII letters, digits, '-', '_' and '.' in repo ids"
    if text.endswith(".git"):
        return "a repo id cannot end in '.git' (pass the repo's name, not its git URL)"
    if "--" in text or ".." in text:
        return "a repo id cannot hold '--' or '..'"
    if text.count("/") > 1:
        return "a repo id is owner/name: one '/' at most"
    if not _REPO_ID.fullmatch(text):
        return ("each part of a repo id is 1 to 96 of A-Z a-z 0-9 - _ . , starting with a letter or digit and "
                "not ending in '-' or '.'")
    return None


def allow_patterns(repo_files: list[str]) -> list[str]:
    """What conversion needs; pickled weights only when there are no safetensors."""
    patterns = list(config.DOWNLOAD_PATTERNS)
    if not any(f.endswith(".safetensors") for f in repo_files):
        patterns += config.PICKLE_PATTERNS
    return patterns


def wanted_files(repo_files: list[str], patterns: list[str]) -> list[str]:
    return sorted(f for f in repo_files if any(fnmatch.fnmatch(f, p) for p in patterns))


def download(repo_id: str, *, revision: str | None = None, token: str | None = None,
             local_dir: str | Path | None = None, cache_dir: str | Path | None = None,
             endpoint: str | None = None, progress: bool = True) -> DownloadResult:
    """Download a checkpoint's conversion files; return where they are.

    A local directory is returned as is.  Files already present are not fetched
    again, and an interrupted download resumes where it stopped (the hub keeps
    ``.incomplete`` blobs).  The token defaults to ``HF_TOKEN`` / the login.
    """
    if Path(repo_id).expanduser().is_dir():
        p = Path(repo_id).expanduser().resolve()
        return DownloadResult(str(p), None, None, sorted(x.name for x in p.iterdir()), local=True)
    if not is_repo_id(repo_id):
        raise UsageError(f"{repo_id!r} is neither a local folder nor a Hugging Face repo id.",
                         hint="Use the form owner/name (e.g. HuggingFaceTB/SmolLM2-135M) or an existing folder.")
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    token = token or config.hf_token()
    endpoint = endpoint or config.hf_endpoint()
    (enable_progress_bars if progress else disable_progress_bars)()
    with hub_errors(repo_id, revision, token):
        info = HfApi(endpoint=endpoint).model_info(repo_id, revision=revision, token=token)
        repo_files = [s.rfilename for s in (info.siblings or [])]
        patterns = allow_patterns(repo_files)
        path = snapshot_download(repo_id, revision=info.sha, token=token, endpoint=endpoint, local_dir=local_dir,
                                 cache_dir=cache_dir or (None if local_dir else config.hf_cache_dir()),
                                 allow_patterns=patterns)
    return DownloadResult(str(path), repo_id, info.sha, wanted_files(repo_files, patterns))


def commit_of(repo_id: str, *, revision: str | None = None, token: str | None = None,
              endpoint: str | None = None) -> str:
    """The commit sha ``revision`` (a branch, tag or sha; default the main branch) names now, downloading nothing."""
    from huggingface_hub import HfApi

    token = token or config.hf_token()
    with hub_errors(repo_id, revision, token):
        sha = HfApi(endpoint=endpoint or config.hf_endpoint()).model_info(repo_id, revision=revision, token=token).sha
    if not sha:
        raise HubError(f"the Hub named no commit for {repo_id}.", hint="Pass --revision with a commit sha.")
    return sha


class hub_errors:
    """Turn huggingface_hub / network exceptions into one line that names the fix."""

    def __init__(self, repo_id: str, revision: str | None, token: str | None) -> None:
        self.repo_id, self.revision, self.token = repo_id, revision, token

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: object) -> None:
        if e is None or not isinstance(e, Exception):
            return None
        from huggingface_hub import errors as he

        repo = self.repo_id
        if isinstance(e, he.GatedRepoError):
            raise HubError(f"{repo} is gated: you must accept its licence on the Hub and use a token.",
                           hint=LOGIN_HINT) from e
        if isinstance(e, he.RevisionNotFoundError):
            raise HubError(f"revision {self.revision!r} does not exist in {repo}.",
                           hint="Check the branch, tag or commit name.") from e
        if isinstance(e, he.RepositoryNotFoundError):
            what = "does not exist or is private" + ("" if self.token else " (no token was sent)")
            raise HubError(f"repository {repo} {what}.",
                           hint="Check the spelling; for a private repo " + LOGIN_HINT[0].lower() + LOGIN_HINT[1:]) from e
        if isinstance(e, he.HfHubHTTPError):
            status = getattr(getattr(e, "response", None), "status_code", "?")
            if status in (401, 403):
                raise HubError(f"the Hub refused access to {repo} (HTTP {status}).", hint=LOGIN_HINT) from e
            raise HubError(f"the Hub answered HTTP {status} for {repo}.", hint="Try again later.") from e
        if isinstance(e, (he.OfflineModeIsEnabled, he.LocalEntryNotFoundError, OSError)) or _is_network(e):
            raise HubError(f"cannot reach the Hugging Face Hub to fetch {repo} ({type(e).__name__}).",
                           hint="Check the network (or HF_ENDPOINT), or pass a local checkpoint folder.") from e
        return None  # anything else propagates as it is


def _is_network(e: BaseException) -> bool:
    # huggingface_hub 2.x uses its own httpx fork, so match the transport errors by name.
    return any(c.__name__ in ("TransportError", "NetworkError", "ConnectError", "TimeoutException")
               for c in type(e).__mro__)
