"""A local stand-in for the Hugging Face Hub's HTTP API, for download and upload tests.

It speaks the part of the protocol huggingface_hub uses to download (repo info, tree listing, ``resolve``
with HEAD/GET/Range, error codes) and to upload over plain LFS (``whoami-v2``, ``repos/create``, ``preupload``,
the LFS batch, PUT of each object and its verify, and the NDJSON commit, on a branch or as a pull request),
so edgeq's real Hub code runs unchanged against it via ``endpoint=``.  Xet storage it does not speak: the
tests turn it off in huggingface_hub (``HF_HUB_DISABLE_XET``), as a user whose ``hf_xet`` is missing has it.
"""
from __future__ import annotations

import base64
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
class User:
    name: str
    role: str = "write"  # the token's: "write" or "read"
    orgs: tuple[str, ...] = ()


@dataclass
class FakeHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, auth
    server: ThreadingHTTPServer | None = None
    users: dict[str, User] = field(default_factory=dict)  # token -> who it is
    lfs: dict[str, bytes] = field(default_factory=dict)  # sha256 -> object, as uploaded
    commits: list[tuple[str, str, str]] = field(default_factory=list)  # repo, revision, summary
    prs: dict[str, list[dict[str, bytes]]] = field(default_factory=dict)  # repo -> each PR's files
    uploads_before_outage: int | None = None  # LFS PUTs answered before the network goes (None: it never does)

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

            def do_POST(self) -> None:
                hub._write(self)

            def do_PUT(self) -> None:
                hub._write(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll: stop() waits for it, and a test stops its hub at every teardown (0.5 s by default).
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    # -- protocol ---------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlparse(h.path).path)
        self.requests.append((h.command, path, h.headers.get("Authorization")))
        if path == "/api/whoami-v2":
            return self._whoami(h)
        m = re.match(r"^/api/models/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+))?(?:/.*)?$", path)
        if m:
            return self._api(h, m.group(1), m.group(2), m.group(3) or "main")
        m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m:
            return self._resolve(h, m.group(1), m.group(2), m.group(3), head)
        self._error(h, 404, "EntryNotFound")

    def _write(self, h: BaseHTTPRequestHandler) -> None:
        """The upload side: who the token is, new repos, and commits of regular and LFS files."""
        path = unquote(urlparse(h.path).path)
        query = urlparse(h.path).query
        self.requests.append((h.command, path, h.headers.get("Authorization")))
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        if h.command == "PUT" and (m := re.match(r"^/lfs-upload/([0-9a-f]{64})$", path)):
            if self.uploads_before_outage is not None:
                if self.uploads_before_outage <= 0:
                    h.close_connection = True  # no answer at all: the client sees the connection go
                    return
                self.uploads_before_outage -= 1
            if hashlib.sha256(body).hexdigest() != m.group(1):
                return self._error(h, 400, "BadOid")
            self.lfs[m.group(1)] = body
            return self._send(h, 200, b"", {})
        if path.startswith("/lfs-verify/"):
            oid = json.loads(body)["oid"]
            return self._send(h, 200 if oid in self.lfs else 404, b"{}", {"Content-Type": "application/json"})
        if path == "/api/validate-yaml":  # a README.md in a commit: its front matter must parse as the Hub's
            return self._validate_yaml(h, json.loads(body)["content"])
        user = self.users.get((h.headers.get("Authorization") or "").removeprefix("Bearer "))
        if user is None:
            return self._error(h, 401, "Unauthorized")
        if m := re.match(r"^/([^/]+/[^/]+)\.git/info/lfs/objects/batch$", path):
            return self._lfs_batch(h, m.group(1), json.loads(body))
        if path == "/api/repos/create":
            return self._create(h, user, json.loads(body))
        m = re.match(r"^/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)$", path)
        if m is None:
            return self._error(h, 404, "EntryNotFound")
        repo_id, what, revision = m.groups()
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(h, 404, "RepoNotFound")
        if user.role != "write" or repo_id.split("/")[0] not in (user.name, *user.orgs):
            return self._error(h, 403, "Forbidden")
        if what == "preupload":
            files = [{"path": f["path"], "uploadMode": "lfs" if f["size"] > 10_000 or f["path"].endswith(".gguf")
                      else "regular", "shouldIgnore": False} for f in json.loads(body)["files"]]
            return self._send(h, 200, json.dumps({"files": files}).encode(), {"Content-Type": "application/json"})
        return self._commit(h, repo_id, repo, revision, body, "create_pr=1" in query)

    def _validate_yaml(self, h: BaseHTTPRequestHandler, content: str) -> None:
        import yaml

        m = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        try:
            meta = yaml.safe_load(m.group(1)) if m else {}
        except yaml.YAMLError as e:
            return self._send(h, 400, json.dumps({"error": f"Invalid YAML: {e}"}).encode(), {})
        if not isinstance(meta, dict):
            return self._send(h, 400, json.dumps({"error": "metadata must be a mapping"}).encode(), {})
        self._send(h, 200, json.dumps({"warnings": []}).encode(), {"Content-Type": "application/json"})

    def _create(self, h: BaseHTTPRequestHandler, user: User, req: dict[str, object]) -> None:
        repo_id = f"{req.get('organization') or user.name}/{req['name']}"
        if user.role != "write" or repo_id.split("/")[0] not in (user.name, *user.orgs):
            return self._error(h, 403, "Forbidden")
        if repo_id in self.repos:  # the Hub says where the repo is, as huggingface_hub expects
            return self._send(h, 409, json.dumps({"error": "You already created this model repo",
                                                  "url": f"{self.endpoint}/{repo_id}"}).encode(),
                              {"X-Error-Code": "RepoExists", "Content-Type": "application/json"})
        token = next(t for t, u in self.users.items() if u is user)
        self.repos[repo_id] = Repo({}, private=req.get("visibility") == "private", token=token, commit="0" * 40)
        self._send(h, 200, json.dumps({"url": f"{self.endpoint}/{repo_id}", "name": repo_id}).encode(),
                   {"Content-Type": "application/json"})

    def _lfs_batch(self, h: BaseHTTPRequestHandler, repo_id: str, req: dict[str, object]) -> None:
        objects = []
        for o in req["objects"]:  # type: ignore[attr-defined]
            entry = {"oid": o["oid"], "size": o["size"]}
            if o["oid"] not in self.lfs:  # an object uploaded before (an interrupted run) is not sent again
                entry["actions"] = {"upload": {"href": f"{self.endpoint}/lfs-upload/{o['oid']}"},
                                    "verify": {"href": f"{self.endpoint}/lfs-verify/{o['oid']}"}}
            objects.append(entry)
        self._send(h, 200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   {"Content-Type": "application/vnd.git-lfs+json"})

    def _commit(self, h: BaseHTTPRequestHandler, repo_id: str, repo: Repo, revision: str, body: bytes,
                create_pr: bool) -> None:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        files = dict(repo.files)
        for item in lines:
            v = item["value"]
            if item["key"] == "file":
                files[v["path"]] = base64.b64decode(v["content"])
            elif item["key"] == "lfsFile":
                if v["oid"] not in self.lfs:
                    return self._error(h, 422, "LfsObjectMissing")
                files[v["path"]] = self.lfs[v["oid"]]
            elif item["key"] == "deletedFile":
                files.pop(v["path"], None)
        summary = next(i["value"]["summary"] for i in lines if i["key"] == "header")
        sha = hashlib.sha1(json.dumps([repo.commit, sorted(files), summary]).encode()).hexdigest()
        out: dict[str, object] = {"commitUrl": f"{self.endpoint}/{repo_id}/commit/{sha}", "commitOid": sha}
        if create_pr:
            self.prs.setdefault(repo_id, []).append(files)
            out["pullRequestUrl"] = f"{self.endpoint}/{repo_id}/discussions/{len(self.prs[repo_id])}"
        else:
            repo.files, repo.commit = files, sha
        self.commits.append((repo_id, revision, summary))
        self._send(h, 200, json.dumps(out).encode(), {"Content-Type": "application/json"})

    def _whoami(self, h: BaseHTTPRequestHandler) -> None:
        user = self.users.get((h.headers.get("Authorization") or "").removeprefix("Bearer "))
        if user is None:
            return self._error(h, 401, "Unauthorized")
        body = {"type": "user", "name": user.name, "orgs": [{"name": o} for o in user.orgs],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": user.role}}}
        self._send(h, 200, json.dumps(body).encode(), {"Content-Type": "application/json"})

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
        if path.endswith((".safetensors", ".gguf")):
            e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return e

    def _resolve(self, h: BaseHTTPRequestHandler, repo_id: str, revision: str, path: str, head: bool) -> None:
        repo = self._repo(h, repo_id, revision)
        if repo is None:
            return
        if path not in repo.files:
            return self._error(h, 404, "EntryNotFound")
        data = repo.files[path]
        etag = hashlib.sha256(data).hexdigest() if path.endswith((".safetensors", ".gguf")) else hashlib.sha1(data).hexdigest()
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
