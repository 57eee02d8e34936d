"""How much the model's output moves per unit of squared change of each weight: its Fisher information.

The importance matrix weighs a tensor's error by the energy of its *inputs* (``E[x_c²]``), which says how much
the tensor's output changes, not how much that change moves the logits: an error in a layer whose output the
rest of the network damps costs less KLD than the same error where it is amplified.  A per-group coefficient
fitted on the probes averages that over every layer, and the allocation then spends its low bits exactly
where the average is wrong (on the embedded model: a tuned file predicted at 0.017 measured 0.061).

The KLD of a small change ``δ`` of the weights is ``½ δᵀ F δ`` to second order, ``F`` the Fisher information
of the model's own distribution.  Its diagonal, per token, is the expected square of ``∂ log p(ŷ) / ∂w`` over windows of the calibration text, ``ŷ`` drawn from the model's
own prediction at every position: a forward pass of the transformers model per window, and a backward pass
per draw, in a child process (its allocator keeps freed memory: ``ALLOCATOR_ENV``), with bfloat16 matrix
products where the CPU has them (``matmul_dtype``).

The diagonals are written as a checkpoint beside the real one (same names and shapes) and converted by the
vendored converter, so they come out under the GGUF's names and in its layout (permuted Q/K rows, merged
experts and all) with no name table of edgeq's.  A checkpoint tensor with no weight of the same name and shape
in the transformers model (experts it fuses into one matrix, say) is written as -1; ``fisher_complete`` then says no, and the caller falls
back to the importance matrix for every tensor, so one model never mixes the two units.  So does a model whose
pass would not fit in the free memory (12 bytes a parameter), or one with no safetensors, each with a note.
"""
from __future__ import annotations

import contextlib
import math
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..conversion import convert
from ..files import atomic_output
from ..llamacpp.process import run_tool
from ..output import Progress, human_bytes, note
from ..sources.checkpoint import read_safetensors_header
from ..sources.gguf_header import tensor_arrays
from ..system import cpu_flags, default_threads, system_info

if TYPE_CHECKING:
    import numpy as np

FISHER_TOKENS = 2048  # of the calibration text (the probes use the same)
CTX = 512
DRAWS = 2  # label draws per window: the window's gradient is one sample of the Fisher, noisy on its own
_SEED = 0
_MISSING = -1.0  # a tensor the passes did not reach: no weight is ever below zero
# The model's weights, their gradients and the running sums, all float32 (activations on top are small at CTX).
BYTES_PER_PARAMETER = 12
# The pass runs in a child process whose allocator keeps what it frees.  glibc hands every block over 32 MiB
# back to the kernel when freed, so each draw's gradients and each window's vocabulary-wide logits (gigabytes on
# a 0.5B model) came back as fresh pages, and a page fault costs ~10 µs on these VMs: 2.1 million of them were
# 21 s of a 47 s two-window pass.  With mmap off and no trimming the heap keeps its pages for the next window;
# they go back to the system when the child exits.
ALLOCATOR_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40), "MALLOC_TOP_PAD_": str(1 << 28),
                 "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}
# CPU flags of native bfloat16 matmuls (Zen 4/5, Sapphire Rapids and later): see ``matmul_dtype``.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def matmul_dtype() -> str:
    """The precision of the pass's matrix products: "bfloat16" where the CPU multiplies it natively, else "float32".

    On a Zen 5 the pass's bfloat16 matmuls (autocast; the sums and the squares stay float32) took half the
    float32 ones' CPU time, and the diagonals they give differ from float32's by less than two label draws of
    float32 differ from each other (per tensor on the embedded model: median 3% against 5%, 90th percentile 14%
    against 15%), the Fisher being a noisy estimate either way.  Where the CPU lacks bfloat16, torch would
    emulate it in float32 arithmetic plus conversions, so there the pass stays float32."""
    return "bfloat16" if set(BF16_FLAGS) & cpu_flags() else "float32"


def fisher_gguf(folder: Path, calib: Path, work: Path, *, tokens: int = FISHER_TOKENS, threads: int | None = None,
                progress: bool = False) -> Path | None:
    """The F32 GGUF of per-weight Fisher diagonals for the HF checkpoint ``folder`` (made once per ``work``), or
    None when the checkpoint has no safetensors to mirror."""
    dst = work / f"fisher-{tokens}.gguf"
    if dst.is_file():
        return dst
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        note("tune: the checkpoint has no safetensors for the Fisher pass to mirror; errors are weighted by the "
             "importance matrix.")
        return None
    params = sum(math.prod(t.get("shape") or [1]) for w in weights for t in read_safetensors_header(w).values())
    need, free = BYTES_PER_PARAMETER * params, system_info().ram_available_bytes
    if need > free:
        note(f"tune: the Fisher pass needs about {human_bytes(need)} (weights, gradients and sums in float32) and "
             f"{human_bytes(free)} is free; errors are weighted by the importance matrix.")
        return None
    stage = work / "fisher-hf"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        _pass_in_child(folder, calib, stage, tokens, threads, progress)
        res = convert(str(stage), quants=["F32"], outtype="f32", outdir=work / "fisher-gguf", name="fisher",
                      progress=progress)
        made = Path(next(o.path for o in res.outputs if o.type == "F32"))
        with atomic_output(dst) as tmp:
            made.replace(tmp)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(work / "fisher-gguf", ignore_errors=True)
    return dst


def fisher_complete(path: Path | None, names: set[str]) -> bool:
    """Whether the Fisher GGUF at ``path`` has a diagonal for each of ``names`` (none written as -1)."""
    if path is None:
        return False  # fisher_gguf stepped aside
    got = read_fisher(path)
    return names <= set(got) and all(not got[n].size or float(got[n].reshape(-1)[0]) >= 0 for n in names)


def read_fisher(path: Path) -> dict[str, np.ndarray]:
    """{tensor: its Fisher diagonal, in the GGUF's shape}, memory-mapped."""
    return {name: data for name, (t, data) in tensor_arrays(path).items() if t.type == "F32"}


def _pass_in_child(folder: Path, calib: Path, stage: Path, tokens: int, threads: int | None, progress: bool) -> None:
    """``_write_checkpoint`` in a child process (``child_main``, its allocator set by ``ALLOCATOR_ENV``), each
    pass reported as a line ``pass N``."""
    def on_line(line: str) -> None:
        if line.startswith("pass "):
            bar.update_to(int(line.split()[1]))

    with Progress("  fisher", max(1, tokens // CTX) * DRAWS, progress, unit="pass") as bar:
        run_tool([sys.executable, "-c", f"import sys; from {__name__} import child_main; child_main(sys.argv[1:])",
                  str(folder), str(calib), str(stage), str(tokens), str(threads or 0)],
                 name="the Fisher pass", env=ALLOCATOR_ENV, on_line=on_line)


def _write_checkpoint(folder: Path, weights: list[Path], calib: Path, stage: Path, tokens: int,
                      threads: int | None, on_pass: Callable[[int], None] | None = None) -> None:
    """``stage``: the checkpoint's small files, and one safetensors file of Fisher diagonals under its names."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads or default_threads())
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok(calib.read_text(encoding="utf-8"), add_special_tokens=False, return_tensors="pt").input_ids[0]
    ids = ids[: max(CTX, tokens // CTX * CTX)]
    bf16 = matmul_dtype() == "bfloat16"
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        diag, seen = _diagonals(model, ids, torch, on_pass=on_pass)
    params = dict(model.state_dict(keep_vars=True))
    out: dict[str, Any] = {}
    for path in weights:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                shape = list(f.get_slice(key).get_shape())
                p = params.get(key)
                d = diag.get(id(p)) if p is not None else None
                if d is not None and list(d.shape) == shape:
                    out[key] = (d / seen).to(torch.float32).contiguous()
                else:
                    out[key] = torch.full(shape, _MISSING, dtype=torch.float32)
    for item in folder.iterdir():
        if item.is_file() and not item.name.endswith((".safetensors", ".safetensors.index.json", ".bin", ".pt")):
            shutil.copy2(item, stage / item.name)
    save_file(out, str(stage / "model.safetensors"), metadata={"format": "pt"})


def _diagonals(model: Any, ids: Any, torch: Any, draws: int = DRAWS,
               on_pass: Callable[[int], None] | None = None) -> tuple[dict[int, Any], int]:
    """{id(weight): Σ (∂ log p(ŷ) / ∂w)²} over every window of ``ids`` and ``draws`` label draws per window, for
    every weight of two or more dimensions; and the number of tokens that sum stands for (windows × draws × CTX).

    The gradient is the whole window's: a change of a weight moves every later position through attention, and
    squaring per-token gradients would drop those cross terms (on a tiny Llama it predicted under half the KLD a
    random change of ``down_proj`` caused)."""
    params = [p for p in model.parameters() if p.ndim >= 2]
    for p in model.parameters():
        p.requires_grad_(p.ndim >= 2)
    diag = {id(p): torch.zeros_like(p, dtype=torch.float32) for p in params}
    gen = torch.Generator().manual_seed(_SEED)
    samples = 0
    for start in range(0, len(ids) - CTX + 1, CTX):
        logp = torch.log_softmax(model(input_ids=ids[start: start + CTX].unsqueeze(0)).logits[0].float(), dim=-1)
        cdf = logp.detach().exp().cumsum_(-1)
        for k in range(draws):
            # Labels drawn from the model's own distribution: then E[g gᵀ] is the Fisher, the KLD's Hessian.
            # By inverse CDF: torch.multinomial took 2 s a draw over a 152k vocabulary, this a few ms.
            u = torch.rand(CTX, 1, generator=gen, dtype=cdf.dtype) * cdf[:, -1:]
            drawn = torch.searchsorted(cdf, u).clamp_(max=cdf.shape[-1] - 1)
            model.zero_grad(set_to_none=True)
            logp.gather(1, drawn).sum().backward(retain_graph=k < draws - 1)
            for p in params:
                if p.grad is not None:
                    # In place: a temporary of squares (2 GB a draw on a 0.5B model) cost 33 s of page faults.
                    diag[id(p)].addcmul_(p.grad, p.grad)
            samples += 1
            if on_pass:
                on_pass(samples)
        del logp, cdf
    model.zero_grad(set_to_none=True)
    return diag, max(samples * CTX, 1)


def child_main(argv: list[str]) -> None:
    """The child ``_pass_in_child`` starts: FOLDER CALIB STAGE TOKENS THREADS (0: every core)."""
    folder, calib, stage, tokens, threads = argv
    _write_checkpoint(Path(folder), sorted(Path(folder).glob("*.safetensors")), Path(calib), Path(stage),
                      int(tokens), int(threads) or None, on_pass=lambda n: print(f"pass {n}", flush=True))
