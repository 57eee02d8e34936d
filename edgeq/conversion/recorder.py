"""Record each finished output in the manifest, its sha256 computed beside the work, never after it.

The float GGUF is hashed while the converter writes it (``TailHash``: gguf-py's
writer goes front to back and never seeks back; the converter is mostly one
thread, so the hash has a core to itself).  A quantized file is hashed on a
background thread while the next one is being made (llama-quantize rewrites its
header at the end, so it cannot be followed), and hashlib releases the GIL on
large buffers.  A file is
recorded, and the manifest saved, as soon as its hash is ready; on any exit,
Ctrl-C included, pending hashes are finished and recorded first, so finished
work always survives.
"""
from __future__ import annotations

import hashlib
import os
import threading
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

    def add(self, path: Path, label: str, bits_per_weight: float, recipe: str, *, sha256: str | None = None) -> None:
        """Start hashing ``path`` (unless its ``sha256`` is known already); record what is already hashed."""
        fut: Future[tuple[str, float]] = Future()
        if sha256:
            fut.set_result((sha256, 0.0))
        else:
            fut = self._pool.submit(_timed_sha256, path)
        self._pending.append((fut, path, label, bits_per_weight, recipe))
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


class TailHash:
    """sha256 of a file while another process writes it front to back; ``finish`` once the writer has exited.

    It reads what has been written so far, then waits a little and reads again,
    until told the writer is done; the last read runs to the end of the file.
    """

    POLL_S = 0.02

    def __init__(self, path: Path) -> None:
        self.path, self.seconds = path, 0.0
        self._hash, self._size, self._final_size = hashlib.sha256(), 0, -1
        self._done = threading.Event()
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._follow, name="edgeq-tail-sha256", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            while not self.path.exists():
                if self._done.wait(self.POLL_S):
                    return
            with open(self.path, "rb") as f:
                while True:
                    finished = self._done.is_set()  # read before the last pass, so nothing written is missed
                    chunk = f.read(1 << 22)
                    if chunk:
                        t0 = time.perf_counter()
                        self._hash.update(chunk)
                        self.seconds += time.perf_counter() - t0
                        self._size += len(chunk)
                    elif finished:
                        self._final_size = os.fstat(f.fileno()).st_size
                        return
                    else:
                        self._done.wait(self.POLL_S)
        except OSError as e:  # the writer failed and its file was removed: nothing to hash
            self._error = e

    def finish(self) -> str | None:
        """The digest of the whole file, or None if it could not be followed (then it is hashed afterwards)."""
        self._done.set()
        self._thread.join()
        if self._error or self._size != self._final_size:
            return None
        return self._hash.hexdigest()
