"""A hot-path change against the libmodbus C server (issue 24, item 2), before and after in
the same run: the farm from another checkout, the farm from this one, the C server.

    python3 -m benchmarks.bench_native --baseline DIR [--repeat 3] [--duration 4]
        [--connections 50,500] [--workers 2]

DIR is a checkout of the farm from before (e.g. `git archive main | tar -x -C DIR`). Three
server sets of 500 servers each (FC 3 x 10 registers, closed loop, as benchmarks.run's
section 1); every round measures each at each concurrency, in an order that rotates from
round to round, and prints each round's ratios to the C server measured in that round
(server CPU per request, and p99 at each concurrency), then every round's figures.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from benchmarks import cserver, procs, run
from benchmarks.procs import Server

SERVERS = 500


def farm(workers: int, checkout: Path | None, label: str) -> Server:
    server = procs.farm(SERVERS, workers)
    server.name = label
    if checkout is not None:
        server.env = {**os.environ, "PYTHONPATH": str(checkout)}
        server.cwd = str(checkout)
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="The checkout before.")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--connections", default="50,500")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.connections.split(",")]
    settings = run.Settings(
        duration_s=args.duration, repeat=args.repeat, generator_processes=1, sizes=()
    )
    baseline = args.baseline.resolve()
    factories = {
        "before": lambda: farm(args.workers, baseline, "farm before"),
        "after": lambda: farm(args.workers, None, "farm after"),
        "C": lambda: cserver.libmodbus_server(SERVERS),
    }
    servers: dict[str, Server] = {}
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        for name, factory in factories.items():
            servers[name] = procs.start(factory)
            run.warm_up(servers[name])
        names = list(servers)
        for number in range(args.repeat):
            order = names[number % len(names) :] + names[: number % len(names)]
            print(f"round {number + 1} of {args.repeat}: {', '.join(order)}", flush=True)
            for connections in concurrencies:
                for name in order:
                    row = run.measure(servers[name], connections, 1, settings)
                    rows.setdefault((name, connections), []).append(row)
    finally:
        for server in servers.values():
            server.stop()
    report(rows, concurrencies, args.repeat)
    print(f"command: {' '.join([Path(sys.executable).name, '-m', __spec__.name, *sys.argv[1:]])}")


def report(
    rows: dict[tuple[str, int], list[dict[str, Any]]], concurrencies: list[int], repeat: int
) -> None:
    print(
        "\n| C | round | before us/req | after us/req | C us/req | before/C | after/C | "
        "after/before | p99 before/C | p99 after/C |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for connections in concurrencies:
        for number in range(repeat):
            got = {name: rows[(name, connections)][number] for name in ("before", "after", "C")}
            cpu = {name: row["server_cpu_per_request_us"] for name, row in got.items()}
            p99 = {name: row["latency_s"]["p99"] for name, row in got.items()}
            ratios = (
                cpu["before"] / cpu["C"],
                cpu["after"] / cpu["C"],
                cpu["after"] / cpu["before"],
                p99["before"] / p99["C"],
                p99["after"] / p99["C"],
            )
            figures = f"{cpu['before']:.1f} | {cpu['after']:.1f} | {cpu['C']:.1f}"
            shown = " | ".join(f"{ratio:.2f}x" for ratio in ratios)
            print(f"| {connections} | {number + 1} | {figures} | {shown} |")


if __name__ == "__main__":
    main()
