"""What flow control's waits cost a bulk stream between two pods: N pairs of
iperf3 runs (128 KiB writes, pinned: client on CPU 0, server on CPU 1), plain
TCP then accelerated, back to back; for each accelerated run, the waits and
the time waited (the controller's counters) and what TCP did meanwhile in
the pods' namespaces (nstat: the receiver's pruned segments, the sender's
retransmissions and timeouts). JSON on stdout, a line per pair on stderr.

    python -m benchmarks.wait_cost [--pairs 10] [--seconds 3] [--accel-arg=--flow-growth-cap=1]

Root only: it builds two pods and runs the real controller on a private
cgroup (all removed after, even on failure)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import click

from accel.sandbox import Controller, Topology, build_pods, exit_on_terminate, private_cgroup, scratch

from .topology import SUBNET

# Receiver and sender TCP counters that tell what a wait did.
NSTAT = ("TcpExtRcvPruned", "TcpExtPruneCalled", "TcpExtTCPRcvQDrop", "TcpRetransSegs", "TcpExtTCPTimeouts", "TcpExtTCPLossProbes")
WRITE = 128 << 10


def _nstat(ns: str) -> dict[str, int]:
    out = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-az", "--json"], capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    data = data.get("kernel", data)
    return {k: int(data.get(k, 0)) for k in NSTAT}


def _into(cgroup: str) -> Any:
    path = os.path.join(cgroup, "cgroup.procs")

    def move() -> None:
        with open(path, "w") as f:
            f.write(str(os.getpid()))

    return move


def _iperf3(topo: Topology, cgroup: str, port: int, seconds: int) -> float:
    server, client = topo.pods[1], topo.pods[0]
    srv = subprocess.Popen(
        ["ip", "netns", "exec", server.ns, "taskset", "-c", "1", "iperf3", "-s", "-1", "-B", server.ipv4, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_into(cgroup),
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # listening?
            ss = subprocess.run(["ip", "netns", "exec", server.ns, "ss", "-Htln", f"sport = :{port}"], capture_output=True, text=True).stdout
            if ss.strip():
                break
            time.sleep(0.05)
        argv = ["iperf3", "-c", server.ipv4, "-p", str(port), "-l", str(WRITE), "-t", str(seconds), "-J"]
        res = subprocess.run(
            ["ip", "netns", "exec", client.ns, "taskset", "-c", "0", *argv], capture_output=True, text=True, timeout=seconds + 30, preexec_fn=_into(cgroup)
        )
        data = json.loads(res.stdout)
        if "error" in data:
            raise click.ClickException(f"iperf3: {data['error']}")
        return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        srv.kill()
        srv.wait()


@click.command()
@click.option("--pairs", type=click.IntRange(1, 200), default=10, show_default=True, help="Plain/accelerated pairs.")
@click.option("--seconds", type=click.IntRange(1, 60), default=3, show_default=True, help="Seconds per iperf3 run.")
@click.option("--accel-arg", "accel_args", multiple=True, help="Pass this option to `accel run` (repeat for more).")
def main(pairs: int, seconds: int, accel_args: tuple[str, ...]) -> None:
    exit_on_terminate()  # SIGTERM/SIGHUP unwind: namespaces, cgroups and the controller are removed
    if os.geteuid() != 0:
        raise click.ClickException("wait_cost: needs root (it builds network namespaces and attaches BPF programs); run it with sudo")
    rows: list[dict[str, Any]] = []
    topo = build_pods(2, SUBNET, prefix=scratch("waitcost", netns=True))
    try:
        with private_cgroup("wc-accel") as acg, private_cgroup("wc-plain") as pcg, tempfile.TemporaryDirectory(prefix="accel-waitcost-") as tmp:
            ctl = Controller(acg, os.path.join(tmp, "state"), rescan_interval=1.0)
            try:
                ctl.start(*accel_args)
                ctl.wait_endpoints(topo.pods[0].ipv4, topo.pods[1].ipv4)
                for i in range(pairs):
                    plain = _iperf3(topo, pcg, 5400 + 2 * i, seconds)
                    rx0, tx0, k0 = _nstat(topo.pods[1].ns), _nstat(topo.pods[0].ns), ctl.counters()
                    accel = _iperf3(topo, acg, 5401 + 2 * i, seconds)
                    rx1, tx1, k1 = _nstat(topo.pods[1].ns), _nstat(topo.pods[0].ns), ctl.counters()
                    row = {
                        "pair": i,
                        "plain_gbit_s": round(plain, 2),
                        "accel_gbit_s": round(accel, 2),
                        "ratio": round(accel / plain, 3) if plain else None,
                        "waits": k1["moved_wait"] - k0["moved_wait"],
                        "returns": k1["returned"] - k0["returned"],
                        "waited_ms": round((k1["wait_ns"] - k0["wait_ns"]) / 1e6, 1),
                        "receiver": {k: rx1[k] - rx0[k] for k in NSTAT if rx1[k] != rx0[k]},
                        "sender": {k: tx1[k] - tx0[k] for k in NSTAT if tx1[k] != tx0[k]},
                    }
                    rows.append(row)
                    print(
                        f"pair {i}: plain {plain:.1f} accel {accel:.1f} Gbit/s ({row['ratio']}x); {row['waits']} waits, {row['waited_ms']:.0f} ms;"
                        f" receiver {row['receiver']} sender {row['sender']}",
                        file=sys.stderr,
                        flush=True,
                    )
            finally:
                ctl.close()
                ctl.cli("down", "--force", check=False)
    finally:
        topo.close()
    ratios: list[float] = [float(r["ratio"]) for r in rows if r["ratio"] is not None]
    waits: list[int] = [int(r["waits"]) for r in rows]
    waited: list[float] = [float(r["waited_ms"]) for r in rows]
    summary = {
        "pairs": pairs,
        "seconds": seconds,
        "accel_args": list(accel_args),
        "ratio_median": round(statistics.median(ratios), 3) if ratios else None,
        "ratio_worst": min(ratios) if ratios else None,
        "at_least_2x": sum(r >= 2 for r in ratios),
        "waits_median": statistics.median(waits) if waits else None,
        "waited_ms_median": statistics.median(waited) if waited else None,
    }
    click.echo(json.dumps({"summary": summary, "pairs": rows}, indent=2))


if __name__ == "__main__":
    main()
