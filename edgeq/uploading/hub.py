"""The upload's conversation with the Hub: who the token is, the one commit, and its errors as one line."""
from __future__ import annotations

from typing import Any

from ..errors import HubError
from ..manifest import Manifest
from ..output import human_bytes, note
from ..sources.hub import LOGIN_HINT


def saved_token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def whoami(token: str, endpoint: str | None) -> dict[str, Any]:
    """Who the token is (name, organizations, role), or one line saying why the Hub would not say."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    with upload_errors("the Hub"):
        try:
            return dict(HfApi(endpoint=endpoint).whoami(token=token, cache=False))
        except HfHubHTTPError as e:
            if getattr(e.response, "status_code", None) == 401:
                raise HubError("the Hub refused this token (HTTP 401): it is wrong, expired or revoked.",
                               hint=LOGIN_HINT) from e
            raise


def send(repo_id: str, sent: list[Any], token: str | None, endpoint: str | None, private: bool,
          revision: str | None, create_pr: bool, progress: bool, mf: Manifest) -> tuple[str, str | None]:
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    (enable_progress_bars if progress else disable_progress_bars)()
    api = HfApi(endpoint=endpoint, token=token)
    with upload_errors(repo_id):
        api.create_repo(repo_id, private=private, exist_ok=True)
        total = sum(s.size_bytes for s in sent)
        note(f"upload: {len(sent)} files, {human_bytes(total)} to {repo_id}")
        info = api.create_commit(repo_id, [CommitOperationAdd(s.path_in_repo, s.local) for s in sent],
                                 commit_message=f"edgeq upload: {', '.join(s.path_in_repo for s in sent if s.path_in_repo.endswith('.gguf'))}",
                                 commit_description=f"Made by edgeq {mf.edgeq_version} with {mf.llama_cpp}.",
                                 revision=revision, create_pr=create_pr)
    return str(info.commit_url), (str(info.pr_url) if info.pr_url else None)


class upload_errors:
    """huggingface_hub's exceptions during an upload as one line that names the fix (nothing was committed)."""

    def __init__(self, repo_id: str) -> None:
        self.repo_id = repo_id

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: object) -> None:
        if e is None or not isinstance(e, Exception):
            return None
        from huggingface_hub import errors as he

        again = "Nothing was committed; run the same command again: files the Hub already holds are not sent twice."
        if isinstance(e, he.RevisionNotFoundError):
            raise HubError(f"the branch of --revision does not exist in {self.repo_id}.",
                           hint="Create it first (`hf repo branch create`), or leave --revision out.") from e
        if isinstance(e, he.HfHubHTTPError):
            status = getattr(getattr(e, "response", None), "status_code", "?")
            if status in (401, 403):
                raise HubError(f"the Hub refused to let this token write {self.repo_id} (HTTP {status}).",
                               hint=LOGIN_HINT) from e
            raise HubError(f"the Hub answered HTTP {status} during the upload to {self.repo_id}.",
                           hint=again) from e
        if isinstance(e, HubError):
            return None  # already one line
        if _network(e):
            raise HubError(f"the connection to the Hub was lost during the upload to {self.repo_id} "
                           f"({type(e).__name__}).", hint=again) from e
        raise HubError(f"the upload to {self.repo_id} failed: {type(e).__name__}: {e}", hint=again) from e


def _network(e: BaseException | None) -> bool:
    """Whether ``e`` or what caused it is the network failing (huggingface_hub wraps an upload's error in a
    RuntimeError; its own httpx fork's transport errors are matched by name)."""
    while e is not None:
        if isinstance(e, OSError) or any(c.__name__ in ("TransportError", "NetworkError", "TimeoutException",
                                                          "RemoteProtocolError") for c in type(e).__mro__):
            return True
        e = e.__cause__ or e.__context__
    return False
