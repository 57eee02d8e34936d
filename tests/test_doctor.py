import json

import pytest

from edgeq.cli import main


def test_doctor_reports_a_whole_toolchain(capsys):
    main(["doctor", "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] is True, rep["checks"]
    assert rep["versions"]["llama-cpp-python"] == "0.3.36"
    assert rep["versions"]["llama.cpp"].startswith("llama.cpp 0c1e57098bba")
    assert rep["rpc"] is True
    assert all(rep["tools"].values())
    assert rep["threads"] >= 1 and rep["system"]["ram_total_bytes"] > 0
    assert "CPU" in rep["llama_system_info"]


def test_doctor_fails_clearly_without_a_build(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGEQ_BUILD_DIR", str(tmp_path / "nothing"))
    with pytest.raises(SystemExit) as e:
        main(["doctor"])
    err = capsys.readouterr().err
    assert e.value.code == 3
    assert err.startswith("Error: llama.cpp tools:") and "scripts/setup.sh" in err


def test_convert_without_a_build_is_an_environment_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGEQ_BUILD_DIR", str(tmp_path / "nothing"))
    with pytest.raises(SystemExit) as e:
        main(["convert", str(tmp_path)])
    assert e.value.code == 3 and "llama.cpp build is missing" in capsys.readouterr().err


def _best_level_for_this_cpu() -> str:
    """Worked out here from /proc/cpuinfo, independently of edgeq.smoke's table."""
    from edgeq.system import cpu_flags

    flags = cpu_flags()
    avx2 = {"avx", "avx2", "fma", "f16c", "bmi2", "sse4_2"}
    zen4 = avx2 | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd", "avx512vbmi", "avx512_vnni",
                   "avx512_bf16"}
    return "zen4" if zen4 <= flags else "haswell" if avx2 <= flags else "x64"


@pytest.mark.slow
def test_doctor_smoke_test_runs_quantized_types_on_the_cpu_level_edgeq_chose(capsys):
    main(["doctor", "--json"])
    rep = json.loads(capsys.readouterr().out)
    runs = {(r["type"], r["path"]): r for r in rep["smoke"]["runs"]}
    assert set(runs) == {(t, p) for t in ("Q8_0", "Q4_K_M", "Q4_0") for p in ("edgeq", "llama-bench")}
    assert all(r["ok"] for r in runs.values()), runs
    assert all(runs[(t, "edgeq")]["cosine_vs_f32"] >= 0.99 for t in ("Q8_0", "Q4_K_M", "Q4_0"))
    cpu = rep["cpu_paths"]
    assert cpu["built"] == ["haswell", "x64", "zen4"]
    assert cpu["variant"] == cpu["expected"] == _best_level_for_this_cpu()
    assert not any(v for k, v in cpu["features"].items() if k.startswith("AMX")), cpu  # never AMX by default
    assert cpu["features"]["REPACK"] is True  # ggml's Q4_0 repacking stays on
    assert cpu["features"].get("AVX512", False) is (cpu["variant"] == "zen4")


@pytest.mark.slow
@pytest.mark.parametrize("level", ["haswell", "x64"])
def test_a_lower_cpu_level_generates_correct_text(level, monkeypatch, capsys, embedded_outputs):
    """What a build for an AVX2-only (x86-64-v3) or a baseline x86-64 machine computes, on this one."""
    from edgeq.generation import generate

    monkeypatch.setenv("EDGEQ_CPU_VARIANT", level)
    main(["doctor", "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] and rep["cpu_paths"]["variant"] == level
    assert rep["cpu_paths"]["features"].get("AVX2", False) is (level == "haswell")
    for path in embedded_outputs[1:]:  # Q8_0 and Q4_K_M
        assert "Paris" in generate(str(path), "The capital of France is", n_predict=8, n_ctx=64, threads=1).text, path.name


@pytest.mark.slow
def test_an_unknown_cpu_level_is_one_line(monkeypatch, capsys, tmp_path):
    from edgeq.diagnosis.smoke import tiny_weights, write_tiny_model

    path = write_tiny_model(tmp_path / "t.gguf", tiny_weights())
    monkeypatch.setenv("EDGEQ_CPU_VARIANT", "pentium")
    with pytest.raises(SystemExit) as e:
        main(["run", str(path), "hi", "-n", "2"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 3 and len(err.splitlines()) == 1
    assert "EDGEQ_CPU_VARIANT=pentium: this build has no such CPU level (it has haswell, x64, zen4)" in err


def test_expected_level_scores_as_ggml_does():
    from edgeq.diagnosis.smoke import expected_level

    avx2 = {"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2"}
    avx512 = avx2 | {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"}  # Skylake-X: no VNNI/VBMI/BF16
    spr = avx512 | {"avx512vbmi", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8"}
    built = ["x64", "haswell", "zen4"]
    assert expected_level(built, set()) == "x64"
    assert expected_level(built, avx512) == "haswell"
    assert expected_level(built, spr) == "zen4"  # AMX is not built by default
    assert expected_level([*built, "sapphirerapids"], spr) == "sapphirerapids"
    assert expected_level(["cannonlake", "cascadelake"], spr) == "cascadelake"  # ggml weighs VNNI above VBMI
    assert expected_level(["zen4"], avx2) is None


def test_features_parse_from_llama_system_info():
    from edgeq.diagnosis.smoke import parse_features

    info = "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 0 | AMX_INT8 = 1 | REPACK = 1 |"
    assert parse_features(info) == {"SSE3": True, "AVX2": True, "AVX512": False, "AMX_INT8": True, "REPACK": True}
