"""How long scaling a fleet by +1,000 servers takes, and whether the servers already there
notice (issue 12: under 2 s, and no request to an existing server fails during it).

    python3 -m benchmarks.bench_scale [--servers 1000] [--add 1000] [--workers 2] [--rounds 3]

A farm of `--servers` default devices at 127.78.0.1... on one port (benchmarks.procs) is
loaded by `farm bench` (closed loop, 50 connections, over the servers it starts with, 10 s
timeout so that a late answer is not mistaken for a lost one) while the fleet is scaled to
`--servers + --add` and back, `--rounds` times, through POST /api/v1/fleets/default/scale.
Each figure is the API call's own time: the answer comes once the workers serve every
newcomer (or have closed every leaver's port). A newcomer is then read with a Modbus
request, and the load's errors are counted at the end.

Prints the figures; nothing is asserted (tests hold behaviour, this holds numbers).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import procs
from farm.client import FarmClient
from farm.modbus import mbap, pdu

HOST = "127.0.0.1"
FIRST_IP = "127.78.0.1"


def reads(address: tuple[str, int]) -> bool:
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(mbap.frame(1, 1, pdu.read(4, 0, 1)))
        return len(sock.recv(64)) == 11


def run(servers: int, add: int, workers: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        farm = procs.start(lambda: procs.ip_farm(servers, workers, FIRST_IP, Path(directory)))
        try:
            measure(farm, servers, add, rounds)
        finally:
            farm.stop()


def measure(farm: procs.Server, servers: int, add: int, rounds: int) -> None:
    assert farm.api_port is not None
    client = FarmClient(f"http://{HOST}:{farm.api_port}", timeout=60)
    start = procs.ip_addresses(servers, FIRST_IP, farm.port_base)
    targets = [f"{host}:{port}" for host, port in start[:: max(1, servers // 200)]]
    report: dict[str, Any] = {}
    duration = 6 + rounds * 4

    def load() -> None:
        command = [sys.executable, "-m", "farm", "bench", "-c", "50", "--duration",
                   str(duration), "--timeout", "10", "--json"]  # fmt: skip
        for target in targets:
            command += ["-t", target]
        done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
        report.update(json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr})

    bench = threading.Thread(target=load)
    bench.start()
    time.sleep(2)  # the load runs before the first scale
    grows, shrinks, served = [], [], 0
    for _ in range(rounds):
        began = time.monotonic()
        client.scale("default", servers + add)
        grows.append(time.monotonic() - began)
        served += reads(procs.ip_addresses(servers + add, FIRST_IP, farm.port_base)[-1])
        time.sleep(1)
        began = time.monotonic()
        client.scale("default", servers)
        shrinks.append(time.monotonic() - began)
        time.sleep(1)
    bench.join()
    print(f"{servers} servers, +{add} and back, {rounds} rounds, under farm bench load "
          f"(50 connections over {len(targets)} of the servers there from the start)")  # fmt: skip
    print(f"  scale +{add}: median {statistics.median(grows):.2f} s, max {max(grows):.2f} s; "
          f"the last newcomer answered a read right after: {served}/{rounds}")  # fmt: skip
    print(f"  scale -{add}: median {statistics.median(shrinks):.2f} s, max {max(shrinks):.2f} s")
    if "error" in report:
        print(f"  farm bench failed: {report['error'][-300:]}")
        return
    errors = {key: report[key] for key in ("timeouts", "connection_errors", "lost", "unexpected")}
    latency = report["latency_s"]
    print(f"  load: {report['responses']} answered of {report['sent']} sent, "
          f"exceptions {report['exceptions_total']}, {errors}, p99 "
          f"{latency['p99'] * 1e3:.1f} ms, max {latency['max'] * 1e3:.0f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--add", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    run(args.servers, args.add, args.workers, args.rounds)


if __name__ == "__main__":
    main()
