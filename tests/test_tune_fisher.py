"""tune's Fisher diagonals: they predict the KLD of a change of the weights, and come out in the GGUF's layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeq.conversion.steps import calibration_text
from edgeq.tuning.fisher import CTX, _diagonals, fisher_complete, fisher_gguf, read_fisher


def _model_and_ids(folder: Path, n: int):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(folder)(calibration_text(None).read_text(encoding="utf-8"),
                                                 add_special_tokens=False, return_tensors="pt").input_ids[0][:n]
    return model, ids, torch


def _logp(model, ids, torch):
    with torch.no_grad():
        return [torch.log_softmax(model(input_ids=ids[i: i + CTX].unsqueeze(0)).logits[0], -1)
                for i in range(0, len(ids), CTX)]


@pytest.mark.parametrize("matmuls", ["float32", "bfloat16"])  # bfloat16: what matmul_dtype picks on most CPUs here
@pytest.mark.parametrize("tensor", ["model.layers.0.mlp.down_proj.weight", "model.layers.1.self_attn.q_proj.weight",
                                    "model.embed_tokens.weight"])
def test_half_the_fisher_weighted_squared_change_is_the_kld_it_causes(tiny_llama, tensor, matmuls):
    model, ids, torch = _model_and_ids(tiny_llama, 2 * CTX)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=matmuls == "bfloat16"):
        diag, tokens = _diagonals(model, ids, torch)
    assert all(d.dtype == torch.float32 for d in diag.values())
    w = model.get_parameter(tensor)
    before = _logp(model, ids, torch)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        # Quantization-like noise: independent per weight, a few per cent of the weights' spread.
        delta = torch.randn(w.shape, generator=gen) * 0.05 * w.std()
        predicted = 0.5 * float((delta.square() * diag[id(w)]).sum()) / tokens
        w.add_(delta)
    after = _logp(model, ids, torch)
    measured = float(torch.cat([(b.exp() * (b - a)).sum(-1) for b, a in zip(before, after)]).mean())
    assert measured > 0 and predicted > 0
    assert 0.67 < predicted / measured < 1.5, (predicted, measured)


@pytest.mark.slow
def test_the_diagonals_come_out_under_the_gguf_names_in_its_shapes(tiny_llama, tmp_path):
    from gguf import GGUFReader

    from edgeq.conversion import convert

    path = fisher_gguf(tiny_llama, calibration_text(None), tmp_path, tokens=CTX, progress=False)
    assert path is not None and path.name == f"fisher-{CTX}.gguf"
    f16 = Path(convert(str(tiny_llama), quants=["F16"], outdir=tmp_path / "f16", progress=False).outputs[0].path)
    weights = {t.name: t for t in GGUFReader(f16).tensors if len(t.shape) > 1}
    assert fisher_complete(path, set(weights))
    got = read_fisher(path)
    assert set(weights) <= set(got)
    for name, t in weights.items():
        assert got[name].shape == np.asarray(t.data).shape, name
        assert (got[name] >= 0).all() and got[name].sum() > 0, name
    # Made once: a second call finds the file and does no pass.
    stamp = path.stat().st_mtime_ns
    assert fisher_gguf(tiny_llama, calibration_text(None), tmp_path, tokens=CTX) == path
    assert path.stat().st_mtime_ns == stamp


def test_a_tensor_the_passes_did_not_reach_means_no_fisher_weighting_at_all(tmp_path):
    import gguf

    path = tmp_path / "fisher.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("blk.0.ffn_up.weight", np.full((4, 32), 0.5, dtype=np.float32))
    w.add_tensor("blk.0.ffn_exps.weight", np.full((2, 4, 32), -1.0, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert fisher_complete(path, {"blk.0.ffn_up.weight"})
    assert read_fisher(path)["blk.0.ffn_exps.weight"].shape == (2, 4, 32)
    assert not fisher_complete(path, {"blk.0.ffn_up.weight", "blk.0.ffn_exps.weight"})
    assert not fisher_complete(path, {"blk.0.ffn_up.weight", "blk.0.absent.weight"})
    assert not fisher_complete(None, {"blk.0.ffn_up.weight"})
