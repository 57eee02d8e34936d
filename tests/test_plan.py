"""edgeq plan: size prediction against real conversions, the memory and speed terms, devices,
the recommendation logic, reading no weights, and bad inputs."""
from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_tiny_checkpoint

from edgeq.cli import cli, main
from edgeq.planning import devices, families, fitcheck, memory, source
from edgeq.planning.recommend import Candidate, recommend
from edgeq.planning.size import predict_size, tensor_types

GIB = 1024**3
REPO = Path(__file__).resolve().parent.parent
EMBEDDED_BENCH = REPO / "benchmarks" / "results" / "embedded.json"


def invoke(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


# --- size: predicted = written --------------------------------------------------------------


@pytest.mark.slow
def test_size_prediction_equals_converted_files(tmp_path, embedded_checkpoint):
    """Hidden 256 takes the K-quant path; FFN 320 gives ffn_down rows of 320, which fall back (Q5_0 / Q8_0)."""
    from edgeq.conversion import convert
    from edgeq.sources.gguf import read_header

    ck = make_tiny_checkpoint(tmp_path / "tiny", embedded_checkpoint, hidden=256, ffn=320)
    spec = source.load(str(ck))
    res = convert(ck, quants=["Q4_K_M"], outdir=tmp_path / "out", progress=False)
    for o in res.outputs:
        real = read_header(o.path)
        types = dict(zip((t.name for t in spec.tensors), tensor_types(spec, o.type)))
        assert {t.name: t.type for t in real.tensors} == types, o.type
        pred = predict_size(spec, o.type)
        # Tensor data is exact; the header differs only by the vocabulary estimate (a few bytes).
        assert abs(pred.file_size_bytes - o.size_bytes) / o.size_bytes < 0.001, (o.type, pred.file_size_bytes, o.size_bytes)
    q4 = dict(zip((t.name for t in spec.tensors), tensor_types(spec, "Q4_K_M")))
    assert (q4["blk.0.ffn_down.weight"], q4["blk.1.ffn_down.weight"]) == ("Q5_0", "Q8_0")  # Q4_K / Q6_K fall back
    assert (q4["blk.0.attn_v.weight"], q4["blk.1.attn_v.weight"]) == ("Q4_K", "Q6_K")  # use_more_bits
    assert q4["output.weight"] == "Q6_K" and q4["blk.0.attn_norm.weight"] == "F32"
    # From the GGUFs themselves (any one header predicts the others), sizes are exact.
    folder = source.load(str(tmp_path / "out"))
    assert set(folder.files) == {"F16", "Q4_K_M"}
    for quant, path in folder.files.items():
        assert predict_size(folder, quant).file_size_bytes == Path(path).stat().st_size, quant


# --- memory and speed terms -----------------------------------------------------------------


def test_kv_cache_scales_exactly_with_ctx_and_cache_type():
    spec = families.spec("Llama-3.1-8B")
    kv = memory.kv_cache_bytes(spec, 4096)
    assert kv == 32 * 4096 * 8 * (128 + 128) * 2  # layers × ctx × KV heads × (K+V) dims × f16
    assert memory.kv_cache_bytes(spec, 8192) == 2 * kv
    assert memory.kv_cache_bytes(spec, 4096, "q8_0") == kv * 17 // 32
    assert memory.kv_cache_bytes(spec, 4000) == kv  # llama.cpp pads the context to 256


def test_sliding_window_layers_cap_their_cache():
    spec = families.spec("Gemma-2-2B")
    assert memory.kv_cache_bytes(spec, 32768) < 2 * memory.kv_cache_bytes(spec, 16384)


def test_model_configs_match_published_parameter_counts():
    for name, cfg in families.configs().items():
        assert abs(families.spec(name).parameters / cfg["published_parameters"] - 1) < 0.01, name
        assert cfg["source"].startswith("https://huggingface.co/")


def test_calibration_fits_the_bench_runs_it_came_from():
    from edgeq.planning.calibrate import from_bench
    from edgeq.planning.speed import FAMILIES, tg_tps

    cal = from_bench(EMBEDDED_BENCH, repack_types=devices.REPACK_AVX2)
    assert 0 < cal.tg_efficiency <= 1 and cal.overhead_bytes > 0 and cal.runs >= 4
    assert {"F16", "Q8_0", "K"} <= set(cal.tg_family_efficiency)  # F16, Q8_0 and Q4_K_M runs
    assert cal.tg_overhead_ms == 0  # one model: the overhead cannot be told from the rates
    for s in cal.samples:
        fam = {f: int(s.get(f"bytes_{f}", 0)) for f in FAMILIES}
        pred, _ = tg_tps(fam, bandwidth_gbps=cal.bandwidth_gbps, efficiency=cal.tg_efficiency,
                         family_efficiency=cal.tg_family_efficiency, overhead_s=cal.tg_overhead_ms / 1e3)
        assert abs(pred / s["tg_tps"] - 1) < 0.1


def _runs(eff: dict[str, float], overhead_s: float, models: list[dict[str, dict[str, int]]],
          bw: float = 40.0) -> list[tuple[dict[str, int], int, float]]:
    """Synthetic (bytes by family, weights, tok/s) runs from known efficiencies and overhead."""
    from edgeq.planning.speed import FAMILIES

    pts = []
    for weights, files in zip((10**8, 4 * 10**8), models):
        for fb in files.values():
            full = {f: fb.get(f, 0) for f in FAMILIES}
            t = overhead_s + sum(b / (bw * 1e9 * eff[f]) for f, b in full.items())
            pts.append((full, weights, 1 / t))
    return pts


def test_per_family_fit_recovers_efficiencies_overhead_and_falls_back():
    from edgeq.planning.calibrate import fit_families
    from edgeq.planning.speed import tg_tps

    eff = {"F32": 0.6, "F16": 0.5, "Q8_0": 0.3, "Q4_0": 0.35, "K": 0.2}
    mb = 10**6
    small = {"F16": {"F16": 270 * mb}, "Q8_0": {"Q8_0": 144 * mb}, "Q4_0": {"Q4_0": 58 * mb, "Q8_0": 29 * mb},
             "Q4_K_M": {"K": 70 * mb, "Q8_0": 31 * mb}}
    big = {q: {f: 4 * b for f, b in fb.items()} for q, fb in small.items()}  # 4× the weights
    fit = fit_families(_runs(eff, 0.002, [small, big]), 40.0)
    assert fit.overhead_s == pytest.approx(0.002, rel=1e-6)
    assert fit.family_efficiency == pytest.approx({f: e for f, e in eff.items() if f != "F32"}, rel=1e-6)
    # One model size: the overhead is not identifiable, so it is 0 and the rates absorb it.
    one = fit_families(_runs(eff, 0.0, [small]), 40.0)
    assert one.overhead_s == 0 and one.family_efficiency["Q4_0"] == pytest.approx(0.35, rel=1e-6)
    # A family the runs never covered runs at the median of the fitted ones of its kind (F32 like F16; Q4_0
    # like Q8_0 and K), or at the pooled efficiency when none of its kind was fitted.
    assert "F32" not in one.family_efficiency and 0.2 < one.efficiency < 0.5
    f32, _ = tg_tps({"F32": 100 * mb}, bandwidth_gbps=40.0, efficiency=one.efficiency,
                    family_efficiency=one.family_efficiency)
    assert f32 == pytest.approx(0.5 * 400)
    quant_only = {f: e for f, e in one.family_efficiency.items() if f in ("Q8_0", "K")}
    q4, _ = tg_tps({"Q4_0": 100 * mb}, bandwidth_gbps=40.0, efficiency=one.efficiency, family_efficiency=quant_only)
    assert q4 == pytest.approx(0.25 * 400)
    f16, _ = tg_tps({"F16": 100 * mb}, bandwidth_gbps=40.0, efficiency=one.efficiency, family_efficiency=quant_only)
    assert f16 == pytest.approx(one.efficiency * 400)
    # Uncalibrated: the plain roofline, bound by memory; calibrated: bound by the slowest family's share.
    assert tg_tps({"Q8_0": 10**9}, bandwidth_gbps=40.0, efficiency=0.5) == (20.0, "memory")
    assert tg_tps(small["Q4_K_M"], bandwidth_gbps=40.0, efficiency=0.3,
                  family_efficiency=fit.family_efficiency)[1] == "K"


# --- devices --------------------------------------------------------------------------------


def test_device_table_has_a_source_for_every_figure():
    table = devices.table()
    assert {"m1-8gb", "m1-16gb", "m2-24gb", "m3-max-64gb", "pi5-8gb", "pi5-16gb", "x86-16gb"} <= set(table)
    for d in table.values():
        for f in ("ram_bytes", "usable_ram_bytes", "bandwidth_gbps", "cores", "gflops", "tg_efficiency",
                  "pp_efficiency", "repack_types"):
            assert d.sources.get(f, "").strip(), (d.name, f)
        assert 0 < d.usable_ram_bytes <= d.ram_bytes and d.bandwidth_gbps > 0


def test_sizes_parse_in_binary_units():
    assert devices.parse_size("8G") == 8 * GIB
    assert devices.parse_size("512MiB") == 512 * 2**20
    with pytest.raises(Exception, match="more than zero"):
        devices.parse_size("0")


# --- recommendation -------------------------------------------------------------------------


def _cands() -> list[Candidate]:
    budget = 6 * GIB
    return [Candidate("m", "F16", 10, 9 * GIB, budget, 5.0, 0.0005),
            Candidate("m", "Q8_0", 10, 5 * GIB, budget, 9.0, 0.0014),
            Candidate("m", "Q4_K_M", 10, 3 * GIB, budget, 15.0, 0.031),
            Candidate("m", "Q4_0", 10, 2.8 * GIB, budget, 17.0, 0.072)]


def test_recommends_best_quality_that_fits_and_is_fast_enough():
    assert recommend(_cands()).quant == "Q8_0"  # F16 does not fit
    rec = recommend(_cands(), min_tps=10)
    assert rec.ok and rec.quant == "Q4_K_M" and "≥ 10" in rec.sentence  # Q8_0 too slow
    assert recommend(_cands(), min_tps=10, max_kld=0.05).quant == "Q4_K_M"


def test_nothing_qualifies_names_the_closest():
    rec = recommend(_cands(), min_tps=16, max_kld=0.05)  # fast ones too lossy, good ones too slow
    assert not rec.ok and rec.quant is None
    assert rec.sentence.startswith("nothing qualifies; the closest is Q4_K_M")
    assert "15.0 tok/s < 16" in rec.sentence


def test_largest_picks_the_biggest_model_that_qualifies():
    budget = 6 * GIB
    cands = [Candidate("small", "Q8_0", 1, GIB, budget, 30, 0.001), Candidate("big", "Q8_0", 8, 8 * GIB, budget, 5, 0.001),
             Candidate("big", "Q4_K_M", 8, 5 * GIB, budget, 9, 0.03), Candidate("big", "Q4_0", 8, 4.5 * GIB, budget, 10, 0.07)]
    rec = recommend(cands, min_tps=8, largest=True)
    assert (rec.model, rec.quant) == ("big", "Q4_K_M")


def test_cli_exits_1_with_the_closest_option(embedded_checkpoint):
    res = CliRunner().invoke(cli, ["plan", str(embedded_checkpoint), "--device", "pi5-8gb", "--max-kld", "0.0001",
                                   "--no-fit-params"])
    assert res.exit_code == 1
    assert "nothing qualifies; the closest is F16" in res.stderr


def test_cli_largest_on_a_device():
    res = invoke(["plan", "--largest", "--family", "qwen2.5", "--device", "pi5-8gb", "--min-tps", "1.5", "--json"])
    data = json.loads(res.stdout)
    assert data["recommendation"]["ok"] and data["recommendation"]["model"] == "Qwen2.5-7B"
    assert {r["model"] for r in data["rows"]} == {"Qwen2.5-0.5B", "Qwen2.5-1.5B", "Qwen2.5-3B", "Qwen2.5-7B"}


# --- reads no weights; JSON schema ----------------------------------------------------------


def _headers_only_checkpoint(dest: Path, tokenizer_from: Path, *, hidden: int = 256, layers: int = 2) -> Path:
    """An HF checkpoint whose safetensors file is a header and nothing else: no tensor byte exists to read."""
    dest.mkdir(parents=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
           "intermediate_size": 512, "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2,
           "vocab_size": 49152, "max_position_embeddings": 2048, "tie_word_embeddings": True}
    (dest / "config.json").write_text(json.dumps(cfg))
    shutil.copy(tokenizer_from / "tokenizer.json", dest / "tokenizer.json")
    shapes = {"model.embed_tokens.weight": [49152, hidden], "model.norm.weight": [hidden]}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {p + "self_attn.q_proj.weight": [hidden, hidden], p + "self_attn.k_proj.weight": [hidden // 2, hidden],
                   p + "self_attn.v_proj.weight": [hidden // 2, hidden], p + "self_attn.o_proj.weight": [hidden, hidden],
                   p + "mlp.gate_proj.weight": [512, hidden], p + "mlp.up_proj.weight": [512, hidden],
                   p + "mlp.down_proj.weight": [hidden, 512], p + "input_layernorm.weight": [hidden],
                   p + "post_attention_layernorm.weight": [hidden]}
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = 2 * math.prod(shape)
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    (dest / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    return dest


def test_hf_source_reads_no_weights(tmp_path, embedded_checkpoint):
    """The safetensors file is its header alone: a plan that read one weight (here, or in the converter it
    asks for the header it would write) would fail on it."""
    ck = _headers_only_checkpoint(tmp_path / "headers-only", embedded_checkpoint)
    res = invoke(["plan", str(ck), "--ram", "8G", "--bandwidth", "50", "--json"])
    data = json.loads(res.stdout)
    assert data["schema"] == "edgeq-plan/1" and data["source"]["kind"] == "hf-folder"
    assert [r["quant"] for r in data["rows"]] == ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"]
    row = data["rows"][0]
    for key in ("file_size_bytes", "bits_per_weight", "memory", "tg_tps", "pp_tps", "quality", "fits", "reason"):
        assert key in row
    assert row["memory"]["total_bytes"] == sum(row["memory"][k] for k in (
        "weights_bytes", "repacked_bytes", "kv_cache_bytes", "compute_bytes", "overhead_bytes"))
    assert row["memory"]["required_bytes"] == row["memory"]["total_bytes"] - row["memory"]["repacked_bytes"]


def test_fit_params_output_is_parsed():
    lines = ["0.00.002.794 I llama_fit_params: printing estimated memory in MiB to stdout (device, model, context, compute) ...",
             "Host 91 11 98 ", "RPC0[127.0.0.1:50052] 300 20 40"]
    assert fitcheck.parse(lines) == [("Host", 91, 11, 98), ("RPC0[127.0.0.1:50052]", 300, 20, 40)]


# --- bad inputs: one clear line --------------------------------------------------------------


def _main_error(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return e.value.code, err


def test_unknown_device_lists_the_known_ones(capsys, embedded_checkpoint):
    code, err = _main_error(["plan", str(embedded_checkpoint), "--device", "pi9"], capsys)
    assert code == 2 and "unknown device 'pi9'" in err and "m1-8gb" in err and "pi5-8gb" in err


def test_zero_ram_is_refused(capsys, embedded_checkpoint):
    code, err = _main_error(["plan", str(embedded_checkpoint), "--ram", "0", "--bandwidth", "50"], capsys)
    assert code == 2 and "--ram" in err


def test_folder_without_a_model(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, err = _main_error(["plan", str(tmp_path / "empty"), "--ram", "8G", "--bandwidth", "50"], capsys)
    assert code == 1 and "neither an HF checkpoint nor GGUFs" in err


def test_report_has_a_plan_section(tmp_path, embedded_checkpoint):
    from edgeq.reporting import report

    res = invoke(["plan", str(embedded_checkpoint), "--device", "m1-8gb", "--no-fit-params", "--json"])
    (tmp_path / "plan.json").write_text(res.stdout)
    md = Path(report([tmp_path / "plan.json"], tmp_path / "report").markdown).read_text()
    assert "## Plan: SmolLM2-135M-Instruct on m1-8gb" in md and "**Recommendation:** " in md


def test_plan_warns_when_tg_is_extrapolated_across_model_sizes():
    from edgeq.planning.calibrate import from_bench
    from edgeq.planning.planner import _size_warning

    cal = from_bench(EMBEDDED_BENCH, repack_types=devices.REPACK_AVX2)  # SmolLM2-135M runs only
    assert _size_warning(families.spec("Qwen2.5-7B"), cal).startswith(" Those runs used one model size")
    assert _size_warning(families.spec("Qwen2.5-0.5B"), cal)  # 3.7× the weights
    cal.tg_model_weights = [families.spec("Qwen2.5-7B").parameters]
    assert not _size_warning(families.spec("Qwen2.5-7B"), cal)
    cal.tg_overhead_ms = 2.0  # fitted from two sizes: no warning
    assert not _size_warning(families.spec("Qwen2.5-0.5B"), cal)
