"""llama.cpp RPC on one machine: this machine alone vs 1, 2, 3 ggml-rpc-servers (loopback ports).

For each model and each server count, fresh servers are started, one `edgeq bench --rpc`
run measures prompt processing, generation and load time (and the client's peak RSS),
and each server's peak RSS is read from /proc (VmHWM) before it is stopped.  Variants
run interleaved in rounds, so a machine shared with other work slows them alike; the
ratios to the local run are the figures to read.

All processes share one CPU here, so RPC can only add cost: what the table shows is
capacity (each server holds a share of the weights and KV cache) and the price per
token of every hop, not a speed-up.

    .venv/bin/python benchmarks/rpc.py                  # embedded Q8_0 + a Qwen2.5-0.5B-shaped Q8_0
    .venv/bin/python benchmarks/rpc.py --rounds 3 --json benchmarks/results/rpc.json
    .venv/bin/python benchmarks/rpc.py --render          # the table again from the JSON, nothing re-run

With ``--json``, the table also goes to ``benchmarks/results/rpc.md`` and between the ``rpc`` markers of
``docs/benchmarks/rpc.md``.
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
RESULTS = REPO / "benchmarks" / "results" / "rpc.json"

from readme_table import publish  # noqa: E402

from edgeq.llamacpp import rpc  # noqa: E402
from edgeq.output import print_table  # noqa: E402

SERVER = REPO / "build" / "bin" / "ggml-rpc-server"
EMBEDDED = REPO / "models" / "SmolLM2-135M-Instruct" / "SmolLM2-135M-Instruct-Q8_0.gguf"
LARGER = REPO / "models" / "plan-accuracy" / "qwen2.5-0.5b-random-gguf" / "qwen2.5-0.5b-random-Q8_0.gguf"
PROMPT = "The quick brown fox jumps over the lazy dog while the farmer counts his sheep. " * 8


def larger_model() -> Path:
    """A Qwen2.5-0.5B-shaped Q8_0 (random weights): made once with convert_memory.make_qwen if missing."""
    if LARGER.is_file():
        return LARGER
    sys.path.insert(0, str(REPO / "benchmarks"))
    from convert_memory import make_qwen

    from edgeq.conversion import convert

    src = make_qwen(LARGER.parent.parent / "qwen2.5-0.5b-random", "qwen2.5-0.5b")
    res = convert(str(src), quants=["Q8_0"], outdir=LARGER.parent, name="qwen2.5-0.5b-random", progress=False)
    return next(Path(o.path) for o in res.outputs if o.type == "Q8_0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def vm_hwm_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(model: Path, n_servers: int, threads: int, n_prompt: int, n_gen: int, tmp: Path) -> dict[str, float]:
    procs, eps = [], []
    try:
        for _ in range(n_servers):
            port = free_port()
            procs.append(subprocess.Popen([str(SERVER), "-H", "127.0.0.1", "-p", str(port), "-t", str(threads)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            eps.append(f"127.0.0.1:{port}")
        for ep in eps:
            while rpc.reachable(ep, timeout=1):
                time.sleep(0.05)
        prompt = tmp / "prompt.txt"
        prompt.write_text(PROMPT)
        out = tmp / "bench.json"
        argv = [sys.executable, "-c", "from edgeq.cli import main; main()", "bench", str(model), "-p", str(n_prompt),
                "-n", str(n_gen), "-r", "1", "--batch", "1", "-t", str(threads), "--prompt-file", str(prompt),
                "-o", str(out), "--json"] + (["--rpc", ",".join(eps)] if eps else [])
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=1200)
        (run,) = json.loads(out.read_text())["runs"]
        if run["status"] != "ok":
            raise RuntimeError(run["reason"])
        servers_rss = [vm_hwm_bytes(p.pid) for p in procs]
        return {"pp": run["pp_tps"]["median"], "tg": run["tg_tps"]["median"], "load_s": run["load_s"],
                "client_rss": run["peak_rss_bytes"], "server_rss": max(servers_rss, default=0),
                "model_mib_per_server": [p["model_mib"] for p in run["placement"] or [] if p["endpoint"]]}
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--servers", default="0,1,2,3")
    # One thread per process: with several processes on a few cores, the spinning worker threads of idle
    # pipeline stages steal the CPU from the busy one (2 threads each made RPC look 10× slower here).
    ap.add_argument("-t", "--threads", type=int, default=1, help="threads for the client and for every server")
    ap.add_argument("-p", "--n-prompt", type=int, default=64)
    ap.add_argument("-n", "--n-gen", type=int, default=64)
    ap.add_argument("--json", help="write the raw figures here")
    ap.add_argument("--render", action="store_true", help="only the docs table again, from --json's file")
    args = ap.parse_args()
    if args.render:
        publish("rpc", render(json.loads(Path(args.json or RESULTS).read_text())))
        return
    models = {"SmolLM2-135M Q8_0": EMBEDDED, "Qwen2.5-0.5B-shape Q8_0": larger_model()}
    counts = [int(x) for x in args.servers.split(",")]
    figures: dict[tuple[str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as d:
        for rnd in range(args.rounds):
            for name, path in models.items():
                order = counts if rnd % 2 == 0 else counts[::-1]  # alternate, so drift hits both ends alike
                for n in order:
                    figures.setdefault((name, n), []).append(measure(path, n, args.threads, args.n_prompt,
                                                                     args.n_gen, Path(d)))
                    print(f"round {rnd + 1}: {name}, {n} servers done", file=sys.stderr)
    rows, raw = [], []
    for (name, n), runs in figures.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("pp", "tg", "load_s", "client_rss", "server_rss")}
        base = {k: statistics.median(r[k] for r in figures[(name, 0)]) for k in ("pp", "tg")}
        hop_ms = (1000 / med["tg"] - 1000 / base["tg"]) / n if n else 0.0
        share = runs[0]["model_mib_per_server"]
        rows.append([name, n or "local", f"{med['pp']:.1f} ({med['pp'] / base['pp']:.2f}×)",
                     f"{med['tg']:.1f} ({med['tg'] / base['tg']:.2f}×)", f"{hop_ms:.1f}" if n else "-",
                     f"{med['load_s']:.2f}", f"{med['client_rss'] / 2**20:.0f}",
                     f"{med['server_rss'] / 2**20:.0f}" if n else "-",
                     "/".join(f"{x:.0f}" for x in share) or "-"])
        raw.append({"model": name, "servers": n, "runs": runs, **{f"median_{k}": v for k, v in med.items()}})
    print_table(f"RPC on one machine ({args.threads} threads per process, -p {args.n_prompt} -n {args.n_gen}, "
                f"median of {args.rounds} interleaved rounds)",
                ["model", "servers", "pp tok/s (vs local)", "tg tok/s (vs local)", "ms/token per hop", "load s",
                 "client peak RSS MiB", "max server peak RSS MiB", "weights MiB per server"], rows)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=2) + "\n")
        publish("rpc", render(raw))


def render(raw: list[dict]) -> str:
    """The docs table from the JSON's medians: each figure beside its ratio to the local run of the same model
    (the ratios are what survive this VM's drift)."""
    local = {r["model"]: r for r in raw if r["servers"] == 0}
    lines = ["| model | servers | pp tok/s (× local) | tg tok/s (× local) | extra ms/token per hop | load s | "
             "client peak RSS | largest server peak RSS | weights MiB per server |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in raw:
        n, base = r["servers"], local[r["model"]]
        hop = f"{(1000 / r['median_tg'] - 1000 / base['median_tg']) / n:.1f}" if n else "-"
        share = "/".join(f"{x:.0f}" for x in r["runs"][0]["model_mib_per_server"]) or "-"
        server = f"{r['median_server_rss'] / 2**20:.0f} MiB" if n else "-"
        lines.append(f"| {r['model']} | {n or 'local'} | {r['median_pp']:.0f} ({r['median_pp'] / base['median_pp']:.2f}×) "
                     f"| {r['median_tg']:.1f} ({r['median_tg'] / base['median_tg']:.2f}×) | {hop} | "
                     f"{r['median_load_s']:.1f} | {r['median_client_rss'] / 2**20:.0f} MiB | {server} | {share} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
