"""edgeq run, rpc-server and --rpc against real ggml-rpc-server processes, each in its own network namespace.

Every server runs in a namespace of its own (``ip netns``), reached over a veth
pair with private addresses (10.213.N.0/30), so the client talks to what are, to
the kernel, separate hosts.  Where namespaces are not permitted (not root) the
servers fall back to loopback ports, and the test output says so.
"""
from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeq.cli import main
from edgeq.errors import RpcError, UsageError
from edgeq.llamacpp import rpc

REPO = Path(__file__).resolve().parent.parent
SERVER = REPO / "build" / "bin" / "ggml-rpc-server"
EDGEQ = [sys.executable, "-c", "from edgeq.cli import main; main()"]
PROMPT = "The capital of France is"
PREFIX = "eqrpc"  # namespace names: eqrpc<pid>_<n>


@dataclass
class Server:
    endpoint: str
    proc: subprocess.Popen[bytes] | None
    netns: str | None
    host_addr: str | None  # this side of the veth pair (a non-loopback address of this machine)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _netns_permitted() -> bool:
    if os.environ.get("EDGEQ_TEST_NO_NETNS"):  # to try the loopback fallback as root
        return False
    probe = f"{PREFIX}{os.getpid()}_probe"
    try:
        ok = _ip("netns", "add", probe, check=False).returncode == 0
    except FileNotFoundError:
        return False
    if ok:
        _ip("netns", "del", probe, check=False)
    return ok


def _remove_stale() -> None:
    """Namespaces left by a test run that was killed (its pid is gone)."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        pid = name[len(PREFIX):].split("_")[0]
        if name.startswith(PREFIX) and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _ip("netns", "del", name, check=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(endpoint: str, proc: subprocess.Popen[bytes] | None, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while rpc.reachable(endpoint, timeout=1):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"ggml-rpc-server for {endpoint} exited {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"ggml-rpc-server at {endpoint} did not start")
        time.sleep(0.1)


@contextlib.contextmanager
def rpc_hosts(n: int, *, tag: str, dark: int = 0) -> Iterator[list[Server]]:
    """``n`` ggml-rpc-servers, each in its own namespace, plus ``dark`` namespaces whose link is down.

    Torn down whatever happens: servers killed, namespaces deleted (which removes
    their veth pairs), leftover host-side veths deleted.
    """
    use_netns = _netns_permitted()
    if not use_netns:
        print("\nnetwork namespaces not permitted here; falling back to loopback ports", file=sys.stderr)
    servers: list[Server] = []
    base = 8 * (os.getpid() % 30) + (0 if tag == "a" else 4)  # 10.213.<base + i>.0/30: distinct per run and fixture
    try:
        _remove_stale()
        for i in range(n + dark):
            if not use_netns:
                if i >= n:
                    servers.append(Server(f"127.0.0.1:{_free_port()}", None, None, None))  # nothing listens
                    continue
                ep = f"127.0.0.1:{_free_port()}"
                argv = [str(SERVER), "-H", "127.0.0.1", "-p", ep.split(":")[1], "-t", "1"]
                servers.append(Server(ep, subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                                      None, None))
                continue
            ns, host_if, ns_if = f"{PREFIX}{os.getpid()}_{tag}{i}", f"eqh{os.getpid() % 10**6}{tag}{i}", "eth0"
            net = f"10.213.{base + i}"
            _ip("netns", "add", ns)
            servers.append(Server(f"{net}.2:50052", None, ns, f"{net}.1"))
            _ip("link", "add", host_if, "type", "veth", "peer", "name", f"eqn{os.getpid() % 10**6}{tag}{i}")
            _ip("link", "set", f"eqn{os.getpid() % 10**6}{tag}{i}", "netns", ns)
            _ip("netns", "exec", ns, "ip", "link", "set", f"eqn{os.getpid() % 10**6}{tag}{i}", "name", ns_if)
            _ip("addr", "add", f"{net}.1/30", "dev", host_if)
            _ip("link", "set", host_if, "up")
            _ip("netns", "exec", ns, "ip", "addr", "add", f"{net}.2/30", "dev", ns_if)
            _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
            if i < n:
                _ip("netns", "exec", ns, "ip", "link", "set", ns_if, "up")
                argv = ["ip", "netns", "exec", ns, str(SERVER), "-H", f"{net}.2", "-p", "50052", "-t", "1"]
                servers[-1].proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for s in servers[:n]:
            _wait_listening(s.endpoint, s.proc)
        yield servers
    finally:
        for s in servers:
            if s.proc and s.proc.poll() is None:
                s.proc.kill()
            if s.proc:
                s.proc.wait()
        for s in servers:
            if s.netns:
                _ip("netns", "del", s.netns, check=False)
        for i in range(n + dark):
            _ip("link", "del", f"eqh{os.getpid() % 10**6}{tag}{i}", check=False)


@pytest.fixture(scope="module")
def hosts() -> Iterator[list[Server]]:
    """Three servers on three 'hosts', and one dark host (namespace with its link down) at the end."""
    with rpc_hosts(3, tag="a", dark=1) as servers:
        yield servers


@pytest.fixture(scope="module")
def gguf(embedded_outputs: list[Path]) -> Path:
    """The embedded model's Q8_0 GGUF (~140 MiB), from the session's one conversion."""
    return next(p for p in embedded_outputs if p.name.endswith("-Q8_0.gguf"))


def edgeq(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(EDGEQ + list(args), capture_output=True, text=True, timeout=timeout)


def run_json(gguf: Path, *args: str) -> dict:
    out = edgeq("run", str(gguf), PROMPT, "-n", "12", "-t", "1", "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# --- edgeq run, locally and across namespaced servers -------------------------------------------------------


@pytest.mark.slow
def test_run_streams_text_and_reports_speed(gguf):
    out = edgeq("run", str(gguf), PROMPT, "-n", "8", "-t", "1")
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout
    assert "prompt 5 tokens" in out.stderr and "generation 8 tokens" in out.stderr and "tok/s" in out.stderr
    chat = edgeq("run", str(gguf), "What is the capital of France?", "--chat", "-n", "16", "-t", "1", "--json")
    res = json.loads(chat.stdout)
    assert "Paris" in res["text"] and res["prompt_tokens"] > 20  # the template's system and role tokens
    assert res["placement"][0]["device"] == "CPU" and res["placement"][0]["model_mib"] > 100


def test_doctor_reports_rpc_support():
    from edgeq.diagnosis import _rpc_check

    ok = _rpc_check(True)
    assert ok.ok and "ggml-rpc-server" in ok.detail and "libggml-rpc" in ok.detail
    bad = _rpc_check(False)
    assert not bad.ok and "GGML_RPC" in bad.detail and bad.fix


@pytest.mark.slow
def test_rpc_run_is_byte_identical_to_local_and_every_server_holds_layers(gguf, hosts):
    local = run_json(gguf)
    eps = [s.endpoint for s in hosts[:3]]
    remote = run_json(gguf, "--rpc", ",".join(eps))
    assert remote["text"] == local["text"] and local["generated_tokens"] == 12
    assert remote["rpc"] == eps and [s["protocol"] for s in remote["servers"]] == ["7.0.0"] * 3
    where = {p["endpoint"]: p for p in remote["placement"]}
    assert set(where) == {None, *eps}
    n_layer = remote["n_layer"]
    assert sorted(x for p in remote["placement"] for x in p["layers"]) == list(range(n_layer + 1))
    for ep in eps:
        assert where[ep]["layers"] and where[ep]["model_mib"] > 1 and where[ep]["kv_mib"] > 0, where[ep]
    assert where[None]["layers"][0] == 0  # this machine keeps the first layers, the servers the rest

    # --no-local: every layer on the servers; the weights shift with --tensor-split.
    solo = run_json(gguf, "--rpc", ",".join(eps[:2]), "--no-local", "--tensor-split", "1,3")
    assert solo["text"] == local["text"]
    split = {p["endpoint"]: p for p in solo["placement"]}
    assert split[None]["layers"] == []
    assert len(split[eps[1]]["layers"]) > 2 * len(split[eps[0]]["layers"]) > 0


@pytest.mark.slow
def test_bench_rpc_writes_figures_and_placement(gguf, hosts, tmp_path):
    eps = ",".join(s.endpoint for s in hosts[:2])
    prompt = tmp_path / "p.txt"
    prompt.write_text("The quick brown fox jumps over the lazy dog. " * 8)
    out = edgeq("bench", str(gguf), "--rpc", eps, "-p", "16", "-n", "8", "-r", "1", "--batch", "1", "-t", "1",
                "--prompt-file", str(prompt), "-o", str(tmp_path / "b.json"), "--json", timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads((tmp_path / "b.json").read_text())
    assert res["settings"]["rpc"] == eps.split(",")
    (run,) = res["runs"]
    assert run["status"] == "ok", run["reason"]
    assert run["tg_tps"]["median"] > 0 and run["pp_tps"]["median"] > 0 and run["rpc"] == eps.split(",")
    assert all(p["layers"] for p in run["placement"])


@pytest.mark.slow
@pytest.mark.parametrize("how", ["server killed", "host silent"])
def test_server_lost_mid_generation_is_one_clear_error_in_bounded_time(gguf, how):
    """Killed: the connection resets.  Silent (link down): packets vanish and llama.cpp would wait forever."""
    with rpc_hosts(1, tag="b") as (server,):
        p = subprocess.Popen(EDGEQ + ["run", str(gguf), "Once upon a time", "-n", "3000", "--ctx", "3100", "-t", "1",
                                      "--timeout", "10", "--rpc", server.endpoint],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            sel = selectors.DefaultSelector()
            sel.register(p.stdout, selectors.EVENT_READ)
            assert sel.select(timeout=120), "no text streamed"  # generation has started
            assert p.stdout.read1(64)
            if how == "server killed":
                server.proc.kill()
            elif server.netns:
                _ip("netns", "exec", server.netns, "ip", "link", "set", "eth0", "down")
            else:  # loopback: a stopped server still accepts connections, so only --timeout can tell
                server.proc.send_signal(signal.SIGSTOP)
            t0 = time.monotonic()
            _, err = p.communicate(timeout=60)
            took = time.monotonic() - t0
        finally:
            if p.poll() is None:
                p.kill()
    err = err.decode()
    assert p.returncode == 1, err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("Error:")]
    gone = f"RPC server {server.endpoint} went away during generation"
    assert gone in line or (not server.netns and "no progress for" in line and server.endpoint in line), err
    assert took < 30


def test_unreachable_and_wrong_port_are_one_clear_error_each(hosts, capsys, tmp_path):
    dark = hosts[3].endpoint  # a namespace whose link is down (loopback fallback: a port nobody listens on)
    silent = ("no answer within", "no route", "unreachable") if hosts[3].netns else ("refused",)
    up_host = hosts[0].endpoint.split(":")[0]
    for ep, why in ((dark, silent), (f"{up_host}:50053", ("refused",))):
        t0 = time.monotonic()
        with pytest.raises(SystemExit) as e:
            main(["bench", str(tmp_path / "x.gguf"), "--rpc", ep, "-o", str(tmp_path / "b.json")])
        assert e.value.code == 1 and time.monotonic() - t0 < 15
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"RPC server {ep}" in err and any(w in err for w in why), err
        assert not list(tmp_path.iterdir())  # nothing written


@contextlib.contextmanager
def fake_server(reply: bytes) -> Iterator[str]:
    """A TCP server that answers anything with ``reply`` and hangs up: another protocol, or another version."""
    sock = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.recv(64)
                conn.sendall(reply)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        t.join()
        sock.close()


def test_protocol_and_version_mismatch_name_the_server(tmp_path):
    with fake_server(b"HTTP/1.1 400 Bad Request\r\n\r\n") as ep:
        with pytest.raises(RpcError, match=f"RPC server {ep} is not usable: it does not speak the ggml-rpc protocol"):
            rpc.probe(ep)
    old = struct.pack("<Q", 28) + bytes([6, 0, 0, 0]) + bytes(24)
    with fake_server(old) as ep:
        with pytest.raises(RpcError, match=f"RPC server {ep} speaks ggml-rpc protocol 6.0.0; .* speaks 7.0.x"):
            rpc.probe(ep)


def test_protocol_version_is_the_vendored_one():
    header = (REPO / "vendor" / "llama.cpp" / "ggml" / "include" / "ggml-rpc.h").read_text()
    assert f"RPC_PROTO_MAJOR_VERSION    {rpc.PROTO_MAJOR}" in header
    assert f"RPC_PROTO_MINOR_VERSION    {rpc.PROTO_MINOR}" in header


# --- edgeq rpc-server -----------------------------------------------------------------------------------------


def test_rpc_server_refuses_a_public_host_without_confirmation(capsys):
    with pytest.raises(SystemExit) as e:
        main(["rpc-server", "--host", "0.0.0.0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no authentication" in err and "trusted network" in err and "--allow-remote" in err


def test_rpc_server_refuses_a_taken_port_and_a_foreign_address(capsys):
    port = _free_port()
    with socket.create_server(("127.0.0.1", port)):
        with pytest.raises(SystemExit) as e:
            main(["rpc-server", "--port", str(port)])
    assert e.value.code == 2 and "address already in use" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["rpc-server", "--host", "192.0.2.1", "--allow-remote"])  # TEST-NET: not an address of this machine
    assert e.value.code == 2 and "cannot listen on 192.0.2.1:50052" in capsys.readouterr().err


def test_rpc_server_with_confirmation_warns_serves_and_stops_cleanly(hosts):
    host = hosts[0].host_addr or "0.0.0.0"  # this machine's side of a veth pair: not loopback
    port = _free_port()
    p = subprocess.Popen(EDGEQ + ["rpc-server", "--host", host, "--port", str(port), "-t", "1", "--allow-remote"],
                         stderr=subprocess.PIPE, text=True)
    try:
        first = p.stderr.readline()
        assert first.startswith("WARNING: ") and "no authentication" in first
        ep = f"{host if host != '0.0.0.0' else '127.0.0.1'}:{port}"
        _wait_listening(ep, p)
        assert rpc.probe(ep).protocol == "7.0.0"
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 0
        assert rpc.reachable(ep, timeout=1)  # the server went with it
    finally:
        if p.poll() is None:
            p.kill()


# --- fit_params and the pure parts ----------------------------------------------------------------------------


@pytest.mark.slow
def test_fit_params_gives_each_server_its_share(gguf, hosts):
    from edgeq.llamacpp.fitparams import fit_params

    eps = [s.endpoint for s in hosts[:2]]
    res = fit_params(gguf, 1024, rpc=eps)
    by = {d.endpoint: d for d in res.devices}
    assert set(by) == {None, *eps} and by[None].device == "Host"
    for ep in eps:
        assert by[ep].model_mib > 0 and by[ep].context_mib > 0 and by[ep].free_mib > 0
    assert 100 < sum(d.model_mib for d in res.devices) < 200  # the Q8_0 file is ~138 MiB


def test_parse_endpoints_and_layer_split():
    assert rpc.parse_endpoints("10.0.0.1:50052, 10.0.0.2") == ["10.0.0.1:50052", "10.0.0.2:50052"]
    for bad in ("host:port", "h:0", "a:1,a:1"):
        with pytest.raises(UsageError):
            rpc.parse_endpoints(bad)
    assert rpc.layer_split(30, 2, None, local=True) == (21, [1.0, 1.0])  # 31 layers (output included) in thirds
    assert rpc.layer_split(30, 2, [1, 1], local=False) == (-1, [1, 1])
    assert rpc.layer_split(30, 1, [3, 1], local=True) == (8, [1])
    with pytest.raises(UsageError, match="needs 3"):
        rpc.layer_split(30, 2, [1, 1], local=True)


def test_parse_placement_reads_llama_cpp_load_log():
    log = ["load_tensors: layer   0 assigned to device CPU, is_swa = 0",
           "load_tensors: layer   1 assigned to device RPC0, is_swa = 0",
           "load_tensors: layer   2 assigned to device RPC1, is_swa = 0",
           "load_tensors:   CPU_Mapped model buffer size =    28.69 MiB",
           "load_tensors: RPC0[10.0.0.1:50052] model buffer size =    57.45 MiB",
           "load_tensors: RPC0[10.0.0.2:50052] model buffer size =    78.95 MiB",
           "llama_kv_cache: RPC0[10.0.0.1:50052] KV buffer size =     3.00 MiB",
           "sched_reserve:        CPU compute buffer size =    49.13 MiB"]
    got = rpc.parse_placement(log, {"RPC0": "10.0.0.1:50052", "RPC1": "10.0.0.2:50052"})
    assert [(p.device, p.endpoint, p.layers, p.model_mib) for p in got] == [
        ("CPU", None, [0], 28.69), ("RPC0", "10.0.0.1:50052", [1], 57.45), ("RPC1", "10.0.0.2:50052", [2], 78.95)]
    assert got[1].kv_mib == 3.0 and got[0].compute_mib == 49.13
    assert rpc.layer_ranges([0, 1, 2, 5, 30], 30) == "0–2, 5 + output"


def test_run_cli_passes_options_to_the_library(monkeypatch, tmp_path):
    import importlib

    from click.testing import CliRunner

    from edgeq.cli import cli
    from edgeq.generation import GenerateResult

    seen = {}

    def fake(model, prompt, **kw):
        seen.update(kw, model=model, prompt=prompt)
        kw["on_text"] and kw["on_text"]("hello")
        return GenerateResult(model, "hello", "length", 3, 1, 10.0, 5.0, 0.1, 0.3, 0.2, 30, 0)

    monkeypatch.setattr(importlib.import_module("edgeq.cli.run"), "run_model", fake)
    res = CliRunner().invoke(cli, ["run", "m.gguf", "hi", "-n", "5", "--temp", "0.7", "--seed", "3", "--chat",
                                   "--rpc", "h:1", "--tensor-split", "1,2"], catch_exceptions=False)
    assert res.exit_code == 0 and res.stdout.startswith("hello")
    assert (seen["n_predict"], seen["temp"], seen["seed"], seen["chat"], seen["rpc"], seen["tensor_split"]) == (
        5, 0.7, 3, True, "h:1", [1.0, 2.0])
    res = CliRunner().invoke(cli, ["run", "m.gguf", "hi", "--json"], catch_exceptions=False)
    assert json.loads(res.stdout)["text"] == "hello" and seen["on_text"] is None


def test_run_missing_model_and_rpc_flags_without_rpc_are_usage_errors(tmp_path):
    from edgeq.generation import generate

    with pytest.raises(UsageError, match="does not exist"):
        generate(tmp_path / "nope.gguf", "hi")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(UsageError, match="need --rpc"):
        generate(tmp_path / "m.gguf", "hi", no_local=True)
