"""llama.cpp's side of the VLM logits check, in a child process: {"model", "mmproj", "images", "folder"} on stdin;
one JSON line on stdout with, per image, libmtmd's layout of the prompt and an .npy (in ``folder``, the parent's to
remove) of log-probabilities at every text token.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from vlmmatrix import PROMPT, log_softmax  # noqa: E402

from edgeq.backends.mtmd import VisionRunner  # noqa: E402


def main() -> None:
    req = json.loads(sys.stdin.read())
    runner = VisionRunner(req["model"], req["mmproj"], threads=1, n_ctx=256)  # one: see archmatrix.THREADS
    out = []
    folder = Path(req["folder"])
    for i, image in enumerate(req["images"]):
        chunks = runner.tokenize(PROMPT.format(image=runner.marker), image)
        try:
            got = runner.evaluate(chunks, all_logits=True)
        finally:
            runner.M.mtmd_input_chunks_free(chunks)
        npy = folder / f"{i}.npy"
        np.save(npy, log_softmax(np.stack(got.logits).astype(np.float64)))
        out.append({"layout": got.layout, "npy": str(npy)})
    runner.close()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
