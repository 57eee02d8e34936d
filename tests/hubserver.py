"""A local stand-in for the Hugging Face Hub's HTTP API, for download tests.

It speaks the part of the protocol huggingface_hub's ``snapshot_download``
uses (repo info, tree listing, ``resolve`` with HEAD/GET/Range, error codes), so
edgeq's real download code runs unchanged against it via ``endpoint=``.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


@dataclass
class Repo:
    files: dict[str, bytes]
    gated: bool = False
    private: bool = False
    token: str = "hf_test_token"
    commit: str = ""

    def __post_init__(self) -> None:
        if not self.commit:
            h = hashlib.sha1(json.dumps(sorted(self.files)).encode()).hexdigest()
            self.commit = h


@dataclass
class FakeHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, auth
    server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def downloaded(self) -> list[str]:
        """Files fetched with GET /resolve/, in request order."""
        return [p.split("/resolve/", 1)[1].split("/", 1)[1] for m, p, _ in self.requests
                if m == "GET" and "/resolve/" in p]

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

            def do_GET(self) -> None:
                hub._handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    # -- protocol ---------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlparse(h.path).path)
        self.requests.append((h.command, path, h.headers.get("Authorization")))
        m = re.match(r"^/api/models/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+))?(?:/.*)?$", path)
        if m:
            return self._api(h, m.group(1), m.group(2), m.group(3) or "main")
        m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m:
            return self._resolve(h, m.group(1), m.group(2), m.group(3), head)
        self._error(h, 404, "EntryNotFound")

    def _repo(self, h: BaseHTTPRequestHandler, repo_id: str, revision: str) -> Repo | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self._error(h, 404, "RepoNotFound")
            return None
        if (repo.gated or repo.private) and h.headers.get("Authorization") != f"Bearer {repo.token}":
            self._error(h, 401 if repo.gated else 404, "GatedRepo" if repo.gated else "RepoNotFound")
            return None
        if revision not in ("main", repo.commit):
            self._error(h, 404, "RevisionNotFound")
            return None
        return repo

    def _api(self, h: BaseHTTPRequestHandler, repo_id: str, kind: str | None, revision: str) -> None:
        repo = self._repo(h, repo_id, revision)
        if repo is None:
            return
        if kind == "tree":
            body = [self._entry(p, d) for p, d in sorted(repo.files.items())]
        else:
            body = {"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": repo.private,
                    "gated": "manual" if repo.gated else False,
                    "siblings": [{"rfilename": p} for p in sorted(repo.files)]}
        self._send(h, 200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    @staticmethod
    def _entry(path: str, data: bytes) -> dict[str, object]:
        e: dict[str, object] = {"type": "file", "path": path, "size": len(data),
                                "oid": hashlib.sha1(data).hexdigest()}
        if path.endswith(".safetensors"):
            e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return e

    def _resolve(self, h: BaseHTTPRequestHandler, repo_id: str, revision: str, path: str, head: bool) -> None:
        repo = self._repo(h, repo_id, revision)
        if repo is None:
            return
        if path not in repo.files:
            return self._error(h, 404, "EntryNotFound")
        data = repo.files[path]
        etag = hashlib.sha256(data).hexdigest() if path.endswith(".safetensors") else hashlib.sha1(data).hexdigest()
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        status, start = 200, 0
        rng = h.headers.get("Range")
        if rng and not head and (m := re.match(r"bytes=(\d+)-", rng)):
            start, status = int(m.group(1)), 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        if head:
            headers["Content-Length"] = str(len(data))
            return self._send(h, 200, b"", headers, length=len(data))
        self._send(h, status, body, headers)

    @staticmethod
    def _error(h: BaseHTTPRequestHandler, status: int, code: str) -> None:
        FakeHub._send(h, status, json.dumps({"error": code}).encode(),
                      {"X-Error-Code": code, "Content-Type": "application/json"})

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str],
              length: int | None = None) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        if "Content-Length" not in headers:
            h.send_header("Content-Length", str(len(body) if length is None else length))
        h.end_headers()
        if body:
            h.wfile.write(body)
