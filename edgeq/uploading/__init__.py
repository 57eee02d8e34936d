"""`edgeq upload`: publish a convert/tune folder to the Hugging Face Hub in one commit, with a measured model card.

    res = edgeq.upload("models/SmolLM2-135M-Instruct", "me/SmolLM2-135M-Instruct-GGUF", results=["edgeq-bench.json"])

What is sent: the GGUFs (split with the pinned ``llama-gguf-split`` where a file is above the Hub's per-file
limit or ``max_shard_size``, each split checked to give the whole file's logits), ``edgeq-manifest.json``, the
importance matrices the files were made with, tune's recipes and results, and the generated ``README.md``.
Everything is checked before anything is sent (the manifest's sha256, the token, who owns the namespace), then
``create_commit`` makes one commit: huggingface_hub uploads the large files first, and only a whole set is
committed, so an interrupted upload publishes nothing, and the same command run again skips the files the Hub
already holds.
"""
from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import config, manifest
from ..diagnosis.smoke import probe
from ..errors import HubError, UsageError, VerifyFailed
from ..files import atomic_output, link_on_the_way, sha256_file
from ..llamacpp import find_toolchain
from ..llamacpp.split import shard_limit_mb, split
from ..sources.gguf_header import read_header
from ..sources.hub import LOGIN_HINT, repo_id_problem
from ..sources.projector import recorded_projector
from ..system import default_threads
from . import embedding_card
from .card import Published, render
from .hub import saved_token, send, whoami
from .measured import measure, result_files

SCHEMA = "edgeq-upload/1"
STAGING = ".edgeq-upload"  # inside the folder: the split shards and the card, until they are sent
FLOAT_TYPES = ("F16", "BF16", "F32")


@dataclass
class Sent:
    path_in_repo: str
    local: str
    size_bytes: int


@dataclass
class UploadResult:
    schema: str
    folder: str
    repo_id: str
    revision: str
    private: bool
    dry_run: bool
    card: str  # where the README.md was written
    files: list[Sent] = field(default_factory=list)
    results: list[str] = field(default_factory=list)  # the results files the card's figures came from
    not_measured: list[str] = field(default_factory=list)  # GGUFs the card shows no quality figure for
    commit_url: str | None = None
    pull_request_url: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def upload(folder: str | Path, repo_id: str | None = None, *, private: bool = False, token: str | None = None,
           revision: str | None = None, create_pr: bool = False, include: list[str] | None = None,
           exclude: list[str] | None = None, results: list[str | Path] | None = None,
           max_shard_size: int | None = None, dry_run: bool = False, endpoint: str | None = None,
           progress: bool = True, preface: list[str] | None = None) -> UploadResult:
    """Publish the GGUFs of ``folder`` (an ``edgeq convert``/``tune``/``ship`` output) to ``repo_id`` in one
    commit; ``preface``: Markdown lines the card puts before its files table (ship's recommendation)."""
    root = Path(folder).expanduser()
    mf = manifest.load(root) if root.is_dir() else None
    if mf is None:
        raise UsageError(f"{root} has no {config.MANIFEST_NAME}: upload publishes a folder edgeq made.",
                         hint="Run `edgeq convert` (or `edgeq tune`) into it first, or point at its output folder.")
    chosen = _select(mf, include, exclude)
    missing = [str(r) for r in results or [] if not Path(r).exists()]
    if missing:
        raise UsageError(f"--results {missing[0]} does not exist.", hint="Pass bench/eval/tune results files or folders.")
    token = token or config.hf_token() or saved_token()
    endpoint = endpoint or config.hf_endpoint()
    # Who may publish where is asked before the files are hashed: a typo in the repo id or a read-only token
    # must not wait for the sha256 of every GGUF.
    repo_id = _repo_id(repo_id, root, mf, chosen, token, endpoint, dry_run)
    _check_hashes(root, mf, chosen)
    stage = root / STAGING
    if stage.is_symlink() or (stage.exists() and not stage.is_dir()):
        raise UsageError(f"{stage} is not a folder edgeq made: upload stages shards and the card there.",
                         hint=f"Remove {stage}, then upload again.")
    stage.mkdir(exist_ok=True)
    try:
        res = _stage_and_send(root, stage, mf, chosen, repo_id, token, endpoint, private, revision, create_pr,
                              results, max_shard_size, dry_run, progress, preface)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)  # shards are remade from the folder's files by a rerun
        raise
    if dry_run:
        with contextlib.suppress(OSError):
            stage.rmdir()  # empty unless a file was split: then its shards stay there to be looked at
    else:
        shutil.rmtree(stage, ignore_errors=True)  # sent
    return res


def _stage_and_send(root: Path, stage: Path, mf: manifest.Manifest, chosen: list[str], repo_id: str,
                    token: str | None, endpoint: str | None, private: bool, revision: str | None, create_pr: bool,
                    results: list[str | Path] | None, max_shard_size: int | None, dry_run: bool,
                    progress: bool, preface: list[str] | None) -> UploadResult:
    limit = min(max_shard_size or config.HUB_FILE_LIMIT_BYTES, config.HUB_FILE_LIMIT_BYTES)
    published = [_publish(root, stage, name, mf.files[name], limit) for name in chosen]
    sent = [Sent(n, str(p), p.stat().st_size) for pub in published for n, p in _locals(root, stage, pub)]
    extra = _extras(root, mf, chosen)
    sent += [Sent(n, str(p), p.stat().st_size) for n, p in extra]
    for s in sent:  # the last gate, before the card lists them: nothing but the folder's own regular files
        _in_folder(root, Path(s.local))
    found = result_files(root, [Path(r) for r in results or []], Path.cwd())
    measured = measure({n: mf.files[n].size_bytes for n in chosen}, found)
    if (head := embedding_card.embedding_head(root, chosen)) is not None:  # a sentence-embedding model's own card
        em = embedding_card.measure(head, {n: mf.files[n].size_bytes for n in chosen}, found)
        text = embedding_card.render(mf, root, repo_id, published, em, [n for n, _ in extra], preface)
        measured.results = em.results  # what the result reports as measured: the cosine, by file
        measured.references = {n for n in chosen if em.files.get(n) and em.files[n].cos_mean is not None}
    else:
        text = render(mf, root, repo_id, published, measured, [n for n, _ in extra], preface)
    card = (root if dry_run else stage) / "README.md"
    with atomic_output(card) as tmp:
        tmp.write_text(text, encoding="utf-8")
    sent.append(Sent("README.md", str(card), card.stat().st_size))
    res = UploadResult(SCHEMA, str(root), repo_id, revision or "main", private, dry_run, str(card), sent,
                       measured.results, [n for n in chosen if n not in measured.quality and n not in measured.references])
    if not dry_run:
        res.commit_url, res.pull_request_url = send(repo_id, sent, token, endpoint, private, revision, create_pr,
                                                     progress, mf)
    return res


def _select(mf: manifest.Manifest, include: list[str] | None, exclude: list[str] | None) -> list[str]:
    """The manifest's GGUFs that ``include``/``exclude`` (types or file-name globs) leave, in manifest order."""
    def hit(name: str, pats: list[str]) -> bool:
        t = mf.files[name].type
        return any(p.upper() == t.upper() or fnmatch.fnmatch(name, p) for p in pats)

    if include == [] or exclude == []:  # given, naming nothing: not "everything"
        raise UsageError("--include/--exclude names nothing.", hint="Name types or file-name globs, or leave it out.")
    # A projector is not a model of its own: it goes with the model naming it (``companions``).
    names = [n for n in mf.files if n.endswith(".gguf") and mf.files[n].role != "projector"]
    if include:
        names = [n for n in names if hit(n, include)]
    if exclude:
        names = [n for n in names if not hit(n, exclude)]
    if not names:
        kinds = ", ".join(sorted({mf.files[n].type for n in mf.files})) or "none"
        raise UsageError("no file of the folder is left to upload by --include/--exclude.",
                         hint=f"The folder's types: {kinds}.")
    return names


def _check_hashes(root: Path, mf: manifest.Manifest, names: list[str]) -> None:
    """Refuse to publish a file that is gone or no longer what the manifest says it is."""
    for name in names:
        path = root / name
        _in_folder(root, path)
        if not path.is_file():
            raise VerifyFailed(f"{name} is in the manifest but not in {root}.",
                               hint=f"Run `edgeq verify {root}`, then `edgeq convert` again to remake it.")
        if path.stat().st_size != mf.files[name].size_bytes or sha256_file(path) != mf.files[name].sha256:
            raise VerifyFailed(f"{name} no longer matches its sha256 in the manifest: it changed after edgeq wrote it.",
                               hint=f"Run `edgeq verify {root}`, and remake the file (`edgeq convert --force`).")


def _in_folder(root: Path, path: Path) -> None:
    """Refuse a file reached through a symlink: it may be anything on this machine (a recipe linked to
    /etc/passwd was published once), and ``verify`` rejects a linked GGUF too."""
    link = link_on_the_way(root, path)
    if link is not None:
        target = os.readlink(link) if link.is_symlink() else "outside the folder"
        raise VerifyFailed(f"{link.relative_to(root) if link.is_relative_to(root) else link} is a symlink "
                           f"(to {target}): upload publishes only the files that are in {root} itself.",
                           hint="Replace the link with a copy of the file (or remove it), then run `edgeq verify`.")


def _repo_id(repo_id: str | None, root: Path, mf: manifest.Manifest, names: list[str], token: str | None,
             endpoint: str | None, dry_run: bool) -> str:
    default = f"{_model_name(mf, names)}-GGUF"
    if dry_run:  # asks the Hub nothing, not even who the token is
        _check_form(repo_id)
        owner, _, name = (repo_id or "").rpartition("/")
        return f"{owner or 'your-name'}/{name or default}"
    return destination(repo_id, token, endpoint, default_name=default)


def _check_form(repo_id: str | None) -> None:
    if repo_id is not None and (why := repo_id_problem(repo_id)):
        raise UsageError(f"{repo_id!r} is not a Hub repo id: {why}.", hint="Use the form owner/name, e.g. me/Model-GGUF.")


def destination(repo_id: str | None, token: str | None, endpoint: str | None, *, default_name: str) -> str:
    """The repo to publish to (default ``<user>/<default_name>``), checked before anything is made or sent: its
    form, a token, and that the token may write to its namespace (``ship --push`` asks this first, too)."""
    _check_form(repo_id)
    token = token or config.hf_token() or saved_token()
    if token is None:
        raise HubError("no Hugging Face token: uploading needs one with write access.", hint=LOGIN_HINT)
    who = whoami(token, endpoint or config.hf_endpoint())
    user, orgs = str(who.get("name")), [str(o.get("name")) for o in who.get("orgs") or []]
    if repo_id is None:
        repo_id = f"{user}/{default_name}"
    elif "/" not in repo_id:
        repo_id = f"{user}/{repo_id}"
    _check_form(repo_id)  # the default too: a model's name may be one the Hub refuses
    role = ((who.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubError(f"the token of {user} is read-only: it cannot create or write {repo_id}.",
                       hint="Make a token with write access at https://huggingface.co/settings/tokens, "
                            "then pass --token or set HF_TOKEN.")
    owner = repo_id.split("/")[0]
    if owner not in (user, *orgs):
        raise HubError(f"{repo_id} is in the namespace {owner!r}, and the token is {user}'s"
                       + (f" (member of {', '.join(orgs)})" if orgs else "") + ": it cannot publish there.",
                       hint=f"Publish under your own name (e.g. {user}/{repo_id.split('/')[1]}) or an organization you belong to.")
    return repo_id


def model_name(file_name: str, label: str) -> str:
    """The model's stem in an edgeq file name (``<Model>-<label>.gguf``)."""
    suffix = f"-{label}.gguf"
    return file_name[: -len(suffix)] if file_name.endswith(suffix) else file_name[: -len(".gguf")]


def _model_name(mf: manifest.Manifest, names: list[str]) -> str:
    return model_name(names[0], mf.files[names[0]].type)


def _publish(root: Path, stage: Path, name: str, rec: manifest.FileRecord, limit: int) -> Published:
    """One GGUF as it goes to the repo: itself, or its shards (made in the staging folder, checked to load)."""
    if rec.size_bytes <= limit:
        return Published(name, rec, [name])
    header = read_header(root / name)
    align = header.alignment
    mb = shard_limit_mb(limit, header.data_offset_bytes, max(-(-t.n_bytes // align) * align for t in header.tensors))
    shards = split(find_toolchain(), root / name, stage, mb)
    _check_shards(root / name, shards[0])
    return Published(name, rec, [p.name for p in shards])


def _check_shards(whole: Path, first: Path) -> None:
    """The shards load in llama.cpp and give the very logits the whole file gives (a smoke run of each)."""
    a, b = probe(whole, threads=default_threads()), probe(first, threads=default_threads())
    if a.get("logits") != b.get("logits"):
        raise HubError(f"the shards of {whole.name} do not give the whole file's logits.",
                       hint="Report this with `edgeq doctor` output; upload without --max-shard-size meanwhile.")


def _locals(root: Path, stage: Path, pub: Published) -> list[tuple[str, Path]]:
    return [(pub.name, root / pub.name)] if pub.repo_names == [pub.name] else [(n, stage / n) for n in pub.repo_names]


def companions(root: Path, name: str) -> list[tuple[str, Path]]:
    """(name in the repo, local path) of what a GGUF of ``root`` was made with: the importance matrix its own
    metadata names, and tune's recipe and result beside it."""
    out = []
    imat = Path(str(read_header(root / name).metadata.get("quantize.imatrix.file") or "")).name
    if imat not in ("", ".", ".."):
        out.append((f"imatrix/{imat}", root / "imatrix" / imat))
    stem = name[: -len(".gguf")]
    out += [(f"{stem}{x}", root / f"{stem}{x}") for x in (".tensor-types.txt", ".tune.json")]
    if (proj := recorded_projector(root / name)) is not None:  # a vision-language model's projector
        out.append((proj.name, proj))
    # A companion reached through a symlink is refused, not skipped: it was meant to go, and what it links to
    # must not (ship copies companions into its deploy folder, whose upload would publish the copy).
    for _, path in out:
        _in_folder(root, path)
    return [(n, p) for n, p in out if p.is_file()]


def _extras(root: Path, mf: manifest.Manifest, names: list[str]) -> list[tuple[str, Path]]:
    """The manifest, and the companions of the chosen files."""
    out = [(config.MANIFEST_NAME, root / config.MANIFEST_NAME)]
    for name in names:
        out += companions(root, name)
    return list(dict.fromkeys(out))


__all__ = ["SCHEMA", "UploadResult", "companions", "destination", "model_name", "upload"]
