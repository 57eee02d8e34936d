"""Record each finished output in the manifest, its sha256 computed on a background thread.

The hash of one file is computed while the next one is being made (hashlib
releases the GIL on large buffers, and the file just written is still in the page
cache), so a conversion pays for hashing only on its last output.  A file is
recorded, and the manifest saved, as soon as its hash is ready; on any exit,
Ctrl-C included, pending hashes are finished and recorded first, so finished
work always survives.
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from .. import manifest
from ..files import sha256_file


def _timed_sha256(path: Path) -> tuple[str, float]:
    t0 = time.perf_counter()
    digest = sha256_file(path)
    return digest, time.perf_counter() - t0


class Recorder:
    """``with Recorder(out, mf) as rec: rec.add(path, label, bits, recipe)`` for each file made."""

    def __init__(self, out: Path, mf: manifest.Manifest) -> None:
        self.out, self.mf = out, mf
        self.seconds: dict[str, float] = {}  # file name -> seconds its hash took (in the background)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgeq-sha256")
        self._pending: list[tuple[Future[tuple[str, float]], Path, str, float, str]] = []

    def add(self, path: Path, label: str, bits_per_weight: float, recipe: str) -> None:
        """Start hashing ``path``; record what is already hashed."""
        self._pending.append((self._pool.submit(_timed_sha256, path), path, label, bits_per_weight, recipe))
        self.collect()

    def collect(self, *, wait: bool = False) -> None:
        """Record the files whose hash is ready (all of them with ``wait``) and save the manifest."""
        ready = [p for p in self._pending if wait or p[0].done()]
        for item in ready:
            fut, path, label, bits, recipe = item
            digest, secs = fut.result()
            self.mf.files[path.name] = manifest.record(path, label, bits, recipe, sha256=digest)
            self.seconds[path.name] = round(secs, 3)
            self._pending.remove(item)
        if ready:
            manifest.save(self.out, self.mf)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        try:
            self.collect(wait=True)
        finally:
            self._pool.shutdown(wait=True)
