"""scripts/vendor_llama_cpp.py's extraction where Python lacks tarfile's "data" filter (3.10.0-3.10.11)."""
from __future__ import annotations

import importlib.util
import io
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "vendor_llama_cpp.py"


def _vendor():
    spec = importlib.util.spec_from_file_location("vendor_llama_cpp", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tar(path: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data, mode in [("tree/ok.txt", b"fine", 0o4777), ("../escape.txt", b"bad", 0o644),
                                 ("/abs.txt", b"bad", 0o644)]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("tree/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)


def test_without_the_data_filter_only_plain_files_inside_are_unpacked(tmp_path, monkeypatch):
    vendor = _vendor()
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    _tar(tmp_path / "a.tar.gz")
    dest = tmp_path / "out" / "inner"
    dest.mkdir(parents=True)
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        vendor.extract_members(tar, tar.getmembers(), dest)
    assert (dest / "tree" / "ok.txt").read_bytes() == b"fine"
    assert not (dest / "tree" / "ok.txt").stat().st_mode & 0o4000  # no set-uid bit
    assert not (tmp_path / "out" / "escape.txt").exists() and not Path("/abs.txt").exists()
    assert not (dest / "tree" / "link").is_symlink()  # links are not unpacked


@pytest.mark.skipif(not hasattr(tarfile, "data_filter"), reason="this Python has no data filter")
def test_with_the_data_filter_a_link_out_is_refused(tmp_path):
    vendor = _vendor()
    _tar(tmp_path / "a.tar.gz")
    with tarfile.open(tmp_path / "a.tar.gz") as tar, pytest.raises(tarfile.FilterError):
        vendor.extract_members(tar, [m for m in tar.getmembers() if m.name.startswith("tree/")], tmp_path / "out")
