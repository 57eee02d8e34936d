"""A scorer in a child process: eval's logits come from llama.cpp (or torch) running outside edgeq.

A native crash (an AMX kernel, an instruction the CPU lacks) then ends the
child, and the parent turns it into one line naming the signal and the file,
where in-process it would have been a bare "Segmentation fault" and no summary.

Protocol, parent → child on stdin, one JSON object per line:
``{"op": "tokenize", "text", "add_bos"}``, ``{"op": "logits", "tokens", "reuse_prefix", "first"}``,
``{"op": "open", "path"}`` (free the model, load another with the same options), ``{"op": "close"}``;
child → parent on its own copy of stdout: one JSON line per request.  A ``logits`` reply's float32 rows
are written into a shared memory file (a memfd the child inherits) that the parent maps: through a pipe,
the 155 MB of one 512-token window of a 152k-vocabulary model cost half a second of copying, more than a
fifth of the window itself.
Both sides keep one mapping of it, grown when a reply is larger: mapping it afresh for
every window cost each side a page fault per 4 KiB of it, every time.
"""
from __future__ import annotations

import json
import mmap
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import EdgeqError, from_dict
from ..llamacpp import Worker
from . import Scorer
from .llamacpp import LogitScorer
from .transformers import HFScorer


class ChildScorer:
    """``tokenize``, ``logits``, ``n_vocab``, ``adds_bos``, ``bos_id``, ``close``: the scorer's face, in a child."""

    def __init__(self, backend: str, path: str, *, n_ctx: int, threads: int, variant: str | None = None,
                 device: str = "cpu", lora: str | None = None, lora_scale: float = 1.0) -> None:
        self.backend, self.path = backend, path
        self.shared = shared_memory_fd()
        self.worker = Worker("edgeq.backends.isolated", pass_fds=[self.shared])
        self.proc = self.worker.proc
        self._loaded(self._ask({"backend": backend, "path": path, "n_ctx": n_ctx, "threads": threads,
                                "variant": variant, "device": device, "lora": lora, "lora_scale": lora_scale,
                                "shared_fd": self.shared}, "loading"))
        self._view = _Mapping(self.shared, mmap.ACCESS_READ)

    def open(self, path: str) -> None:
        """Score ``path`` from now on, with the same backend and options, in the same child: the model before it
        is freed first, and the child's start-up (Python, edgeq, the engine's library: about 2 s) is not paid
        again.  Arrays from ``logits`` before this stay valid only until the next ``logits``, as always."""
        self.path = path
        self._loaded(self._ask({"op": "open", "path": path}, "loading"))

    def _loaded(self, head: dict[str, Any]) -> None:
        self.kind = head["kind"]
        self.n_vocab, self.adds_bos, self.bos_id = int(head["n_vocab"]), bool(head["adds_bos"]), int(head["bos_id"])
        self.offloaded_layers: int | None = head.get("offloaded_layers")  # llama.cpp's own count (GGUF only)

    def tokenize(self, text: str, add_bos: bool | None = None) -> list[int]:
        return list(self._ask({"op": "tokenize", "text": text, "add_bos": add_bos}, "tokenizing")["tokens"])

    def logits(self, tokens: list[int], *, reuse_prefix: bool = False, first: int = 0) -> Any:
        """float32 array (len(tokens) - first, n_vocab), read-only and valid until the next call."""
        import numpy as np

        head = self._ask({"op": "logits", "tokens": tokens, "reuse_prefix": reuse_prefix, "first": first}, "scoring")
        rows, cols = head["shape"]
        if not rows * cols:
            return np.zeros((rows, cols), dtype=np.float32)
        return np.frombuffer(self._view.at_least(rows * cols * 4), dtype=np.float32, count=rows * cols).reshape(rows, cols)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"op": "close"}\n')
                self.proc.stdin.close()
                self.worker.wait()
            except OSError:
                pass
        self.worker.stop()
        if self.shared >= 0:
            os.close(self.shared)
            self.shared = -1

    def _ask(self, request: dict[str, Any], doing: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise self._died(doing) from None
        line = self.proc.stdout.readline()
        if not line:
            raise self._died(doing)
        reply = json.loads(line)
        if not reply.get("ok"):
            self.close()
            raise from_dict(reply)
        return dict(reply)

    def _died(self, doing: str) -> EdgeqError:
        engine = "transformers (torch)" if self.backend == "transformers" else "llama.cpp"
        err = self.worker.failure(f"while {doing} {Path(self.path).name}", engine=engine)
        self.worker.stop()
        return err


def shared_memory_fd() -> int:
    """An anonymous file in memory (Linux memfd; elsewhere an unlinked temporary file) a child can inherit."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("edgeq-logits")
    fd, name = tempfile.mkstemp(prefix="edgeq-logits-")
    os.unlink(name)
    return fd


class _Mapping:
    """One mapping of the shared file, replaced by a larger one only when a reply outgrows it."""

    def __init__(self, fd: int, access: int) -> None:
        self.fd, self.access, self.size = fd, access, 0
        self.map: mmap.mmap | None = None

    def at_least(self, n: int) -> mmap.mmap:
        if self.map is None or self.size < n:
            # The old mapping is not closed: arrays handed out earlier may still view it (they keep it alive).
            self.map, self.size = mmap.mmap(self.fd, n, access=self.access), n
        return self.map


def _share(mapping: _Mapping, rows: Any) -> None:
    """Write ``rows`` (float32, C order) at the start of the shared file, growing it when needed."""
    n = rows.nbytes
    if n and os.fstat(mapping.fd).st_size < n:
        os.ftruncate(mapping.fd, n)
    if n:
        mapping.at_least(n)[:n] = memoryview(rows).cast("B")


def _open(spec: dict[str, Any]) -> Scorer:
    if spec["backend"] == "transformers":
        return HFScorer(spec["path"], threads=spec["threads"], variant=spec.get("variant") or "fp32")

    return LogitScorer(spec["path"], n_ctx=spec["n_ctx"], threads=spec["threads"], device=spec.get("device") or "cpu")


def _reply(out: BinaryIO, obj: dict[str, Any]) -> None:
    out.write(json.dumps(obj).encode() + b"\n")
    out.flush()


def _load(out: BinaryIO, spec: dict[str, Any]) -> Scorer:
    """Open ``spec``'s model and tell the parent what it is."""
    scorer = _open(spec)
    if spec.get("lora"):  # eval --lora: the adapter GGUF applied to the model (llama.cpp only)
        assert isinstance(scorer, LogitScorer)
        scorer.use_lora(spec["lora"], spec.get("lora_scale", 1.0))
    runner = getattr(scorer, "runner", None)
    _reply(out, {"ok": True, "kind": scorer.kind, "n_vocab": int(scorer.n_vocab), "adds_bos": bool(scorer.adds_bos),
                 "bos_id": int(scorer.bos_id), "offloaded_layers": getattr(runner, "offloaded_layers", None)})
    return scorer


def _serve(out: BinaryIO) -> None:
    import numpy as np

    spec = json.loads(sys.stdin.readline())
    scorer = _load(out, spec)
    shared = _Mapping(spec["shared_fd"], mmap.ACCESS_WRITE)
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "close":
            break
        if req["op"] == "open":
            scorer.close()
            spec["path"] = req["path"]
            scorer = _load(out, spec)
        elif req["op"] == "tokenize":
            _reply(out, {"ok": True, "tokens": scorer.tokenize(req["text"], req["add_bos"])})
        else:
            rows = np.ascontiguousarray(scorer.logits(req["tokens"], reuse_prefix=req["reuse_prefix"], first=req["first"]),
                                        dtype=np.float32)
            _share(shared, rows)
            _reply(out, {"ok": True, "shape": list(rows.shape)})
    scorer.close()


def main() -> None:
    # Our replies get a private copy of stdout; fd 1 becomes stderr, so nothing llama.cpp prints corrupts them.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        _serve(out)
    except EdgeqError as e:
        _reply(out, e.to_dict() | {"ok": False})
    except ValueError as e:  # a sequence longer than the context, from the scorer's own checks
        _reply(out, {"ok": False, "error": "usage", "message": f"{e}.", "exit_code": 2})
    except RuntimeError as e:  # llama.cpp refused the file or the context
        _reply(out, {"ok": False, "error": "error", "message": f"{e}.", "exit_code": 1})
    except BaseException as e:  # noqa: BLE001 - one line for the parent, and never the interpreter's teardown
        _reply(out, {"ok": False, "error": "error", "message": f"{type(e).__name__}: {e}", "exit_code": 1})
    out.flush()
    os._exit(0)  # skip the interpreter's teardown of llama.cpp


if __name__ == "__main__":
    main()
