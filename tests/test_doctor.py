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
