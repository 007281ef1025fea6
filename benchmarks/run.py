"""The benchmark suite: one command, figures and ratios measured in the same run.

    python3 -m benchmarks.run [--duration 5] [--generator-processes 1] [--quick]

Writes benchmarks/README.md (machine, versions, command, figures, ratios, targets met or
missed). Sections, all against servers this suite starts on free loopback ports:
  1. throughput and latency, 500 servers, C = 50 and 500, FC 3 x 10 registers: the farm
     (2 workers) against the one-process pymodbus design (benchmarks.pymodbus_farm) and the
     minimal uvloop responder (benchmarks.responder), with server CPU time per request
     (utime + stime of every server process, from /proc, around each run);
  2. scaling: the farm with 1 worker against 2;
  3. start-up (process start to every server ready, through the API) and memory per idle
     server (RSS and PSS from /proc/PID/smaps_rollup, master + workers) at 500, 2,000 and
     10,000 servers;
  4. pipelined requests (depth 8);
  5. latency at a fixed rate (open loop, 25,000 requests/s over 500 connections): what a
     SCADA polling on a schedule sees, free of the closed loop's queueing at saturation.
The load comes from `farm bench`'s own engine (farm.bench). Nothing here asserts a speed:
a noisy machine makes absolute figures move, so each is set against a baseline measured
minutes apart in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import procs, report
from benchmarks.procs import Server
from farm.bench import run_bench, summarize
from farm.loadspec import BenchOptions, parse_mix, split

SERVERS = 500
PDUS = parse_mix("3:100", address=0, quantity=10)
OPEN_RATE = 25_000.0  # requests/s: 500 devices each polled 50 times a second


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    duration_s: float
    generator_processes: int
    sizes: tuple[int, ...]


def measure(
    server: Server, connections: int, depth: int, settings: Settings, rate: float | None = None
) -> dict[str, Any]:
    """One run (closed loop, or open at `rate`); the bench report plus the server's CPU."""
    options = BenchOptions(
        connections=connections,
        rate=rate,
        depth=depth,
        duration_s=settings.duration_s,
        timeout_s=2.0,
        processes=min(settings.generator_processes, connections),
    )
    specs = split(server.targets, PDUS, options)
    before = procs.cpu_seconds(server.pids)
    results = run_bench(specs)
    server_cpu = procs.cpu_seconds(server.pids) - before
    row = summarize(results, options, server.count)
    row["server"] = server.name
    answered = row["responses"]
    row["server_cpu_per_request_us"] = 1e6 * server_cpu / answered if answered else None
    row["server_busy"] = server_cpu / row["window_s"]
    print(report.one_line(row), flush=True)
    return row


def warm_up(server: Server) -> None:
    options = BenchOptions(connections=50, duration_s=1.0, timeout_s=2.0)
    run_bench(split(server.targets, PDUS, options))


def load_sections(settings: Settings) -> dict[str, Any]:
    everyone: list[Server] = []
    try:
        # One after the other: each picks its free ports once the previous one holds its own.
        for factory in (
            lambda: procs.farm(SERVERS, 2),
            lambda: procs.farm(SERVERS, 1),
            lambda: procs.pymodbus_farm(SERVERS),
            lambda: procs.pymodbus_farm(SERVERS, uvloop=True),
            lambda: procs.responder(SERVERS),
        ):
            server = procs.start(factory)
            everyone.append(server)
            print(f"started {server.name}: {SERVERS} servers in {server.ready_s:.2f} s", flush=True)
        farm2, farm1, pym, pym_uv, ceiling = everyone
        idle = {s.name: procs.memory_bytes(s.pids) for s in (farm2, pym, ceiling)}
        for server in everyone:
            warm_up(server)
        throughput = [
            measure(server, connections, 1, settings)
            for connections in (50, 500)
            for server in (farm2, pym, ceiling)
        ]
        throughput.append(measure(pym_uv, 500, 1, settings))
        scaling = [measure(farm1, c, 1, settings) for c in (50, 500)]
        pipelined = [measure(s, 50, 8, settings) for s in (farm2, ceiling, pym)]
        paced = [measure(s, 500, 8, settings, OPEN_RATE) for s in (farm2, farm1, ceiling, pym)]
    finally:
        for server in everyone:
            server.stop()
    return {
        "throughput": throughput,
        "scaling": scaling,
        "pipelined": pipelined,
        "paced": paced,
        "idle_memory_500": idle,
    }


def startup_section(settings: Settings) -> list[dict[str, Any]]:
    rows = []
    for count in settings.sizes:
        server = procs.start(functools.partial(procs.farm, count, 2))
        try:
            time.sleep(1.0)  # idle: let start-up garbage settle before reading memory
            rss, pss = procs.memory_bytes(server.pids)
        finally:
            server.stop()
        row = {"servers": count, "ready_s": server.ready_s, "rss": rss, "pss": pss}
        print(
            f"farm of {count}: ready in {server.ready_s:.2f} s, "
            f"RSS {rss / count / 1024:.1f} KiB and PSS {pss / count / 1024:.1f} KiB per server",
            flush=True,
        )
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the benchmark suite; write its README.")
    parser.add_argument("--duration", type=float, default=5.0, help="Seconds per load run.")
    parser.add_argument("--generator-processes", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="2 s runs; 10,000 servers skipped.")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("README.md"))
    args = parser.parse_args()
    settings = Settings(
        duration_s=2.0 if args.quick else args.duration,
        generator_processes=args.generator_processes,
        sizes=(500, 2000) if args.quick else (500, 2000, 10000),
    )
    began = time.monotonic()
    figures = load_sections(settings)
    figures["startup"] = startup_section(settings)
    command = "python3 -m benchmarks.run " + " ".join(sys.argv[1:])
    text = report.readme(figures, command.strip(), settings.duration_s, time.monotonic() - began)
    args.output.write_text(text)
    print(f"wrote {args.output.name} in {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
