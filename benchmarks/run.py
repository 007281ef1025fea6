"""The benchmark suite: one command, figures and ratios measured in the same run.

    python3 -m benchmarks.run [--duration 4] [--repeat 3] [--generator-processes 1] [--quick]

Writes benchmarks/README.md (machine, versions, command, figures, ratios, targets met or
missed). Sections, all against servers this suite starts on free loopback ports:
  1. throughput and latency, 500 servers, C = 50 and 500, FC 3 x 10 registers: the farm
     (2 workers) against the one-process pymodbus design (benchmarks.pymodbus_farm) and the
     minimal uvloop responder (benchmarks.responder), with server CPU time per request
     (utime + stime of every server process, from /proc, around each run);
  2. scaling: the farm with 1 worker against 2;
  3. start-up (process start to every server ready, through the API: the median of 3
     starts) and memory per idle server (RSS and PSS from /proc/PID/smaps_rollup, master +
     workers, of the last start) at 500, 2,000 and 10,000 servers;
  4. pipelined requests (depth 8);
  5. latency at a fixed rate (open loop, 25,000 requests/s over 500 connections): what a
     SCADA polling on a schedule sees, free of the closed loop's queueing at saturation.
The load comes from `farm bench`'s own engine (farm.bench.command). Nothing here asserts a speed:
a noisy machine makes absolute figures move, so each is set against a baseline measured
minutes apart in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import cserver, procs, report
from benchmarks.procs import Server
from farm.bench.command import run_bench, summarize
from farm.bench.spec import BenchOptions, parse_mix, split

SERVERS = 500
PDUS = parse_mix("3:100", address=0, quantity=10)
OPEN_RATE = 25_000.0  # requests/s: 500 devices each polled 50 times a second


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    duration_s: float
    repeat: int
    generator_processes: int
    sizes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Case:
    server: Server
    connections: int
    depth: int = 1
    rate: float | None = None


def measure(
    server: Server, connections: int, depth: int, settings: Settings, rate: float | None = None
) -> dict[str, Any]:
    """One run (closed loop, or open at `rate`); the bench report, the server's CPU, and
    the CPU that other processes on this shared machine took meanwhile."""
    options = BenchOptions(
        connections=connections,
        rate=rate,
        depth=depth,
        duration_s=settings.duration_s,
        timeout_s=2.0,
        processes=min(settings.generator_processes, connections),
    )
    specs = split(server.targets, PDUS, options)
    before, machine_before = procs.cpu_seconds(server.pids), procs.machine_busy_seconds()
    results = run_bench(specs)
    server_cpu = procs.cpu_seconds(server.pids) - before
    machine = procs.machine_busy_seconds() - machine_before
    row = summarize(results, options, server.count)
    row["server"] = server.name
    answered = row["responses"]
    row["server_cpu_per_request_us"] = 1e6 * server_cpu / answered if answered else None
    row["server_busy"] = server_cpu / row["window_s"]
    others = machine - server_cpu - row["generator"]["cpu_s"]
    row["others_cores"] = max(0.0, others) / row["window_s"]
    print(report.one_line(row), flush=True)
    return row


def warm_up(server: Server) -> None:
    options = BenchOptions(connections=50, duration_s=1.0, timeout_s=2.0)
    run_bench(split(server.targets, PDUS, options))


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The least disturbed of repeated runs: the fastest closed-loop run, or the open-loop
    run with the lowest p99; all the runs' throughputs ride along."""
    if runs[0]["rate"]:
        chosen = min(runs, key=lambda r: r["latency_s"]["p99"])
    else:
        chosen = max(runs, key=lambda r: r["requests_per_s"])
    return chosen | {"all_requests_per_s": [r["requests_per_s"] for r in runs]}


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
            lambda: cserver.libmodbus_server(SERVERS),
        ):
            server = procs.start(factory)
            everyone.append(server)
            print(f"started {server.name}: {SERVERS} servers in {server.ready_s:.2f} s", flush=True)
        farm2, farm1, pym, pym_uv, ceiling, native = everyone
        idle = {s.name: procs.memory_bytes(s.pids) for s in (farm2, pym, ceiling, native)}
        for server in everyone:
            warm_up(server)
        sections: dict[str, list[Case]] = {
            "throughput": [Case(s, c) for c in (50, 500) for s in (farm2, pym, ceiling, native)]
            + [Case(pym_uv, 500)],
            "scaling": [Case(farm1, c) for c in (50, 500)],
            "pipelined": [Case(s, 50, depth=8) for s in (farm2, ceiling, native, pym)],
            "paced": [
                Case(s, 500, depth=8, rate=OPEN_RATE) for s in (farm2, farm1, ceiling, native, pym)
            ],
        }
        # Rounds, not back-to-back repeats: a burst of load from elsewhere on this shared
        # machine then spoils one run of several cases rather than every run of one case.
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for round_number in range(settings.repeat):
            print(f"round {round_number + 1} of {settings.repeat}", flush=True)
            for name, cases in sections.items():
                for index, case in enumerate(cases):
                    row = measure(case.server, case.connections, case.depth, settings, case.rate)
                    runs.setdefault((name, index), []).append(row)
    finally:
        for server in everyone:
            server.stop()
    figures: dict[str, Any] = {
        name: [best(runs[(name, index)]) for index in range(len(cases))]
        for name, cases in sections.items()
    }
    figures["idle_memory_500"] = idle
    # Every round's throughput rows, trimmed: the per-round ratios show the noise that the
    # best-of rows hide.
    keep = ("server", "connections", "requests_per_s", "server_cpu_per_request_us", "latency_s")
    figures["throughput_rounds"] = [
        [{key: runs[("throughput", index)][round_number][key] for key in keep}
         for index in range(len(sections["throughput"]))]
        for round_number in range(settings.repeat)
    ]  # fmt: skip
    return figures


STARTS = 3  # farms started per size: one start's time swings by a tenth of a second here


def startup_section(settings: Settings) -> list[dict[str, Any]]:
    rows = []
    for count in settings.sizes:
        ready: list[float] = []
        for start in range(STARTS):
            server = procs.start(functools.partial(procs.farm, count, 2))
            try:
                ready.append(server.ready_s)
                if start == STARTS - 1:  # the last one's memory
                    time.sleep(1.0)  # idle: let start-up garbage settle before reading memory
                    rss, pss = procs.memory_bytes(server.pids)
            finally:
                server.stop()
        row = {
            "servers": count,
            "ready_s": statistics.median(ready),
            "ready_runs": ready,
            "rss": rss,
            "pss": pss,
        }
        print(
            f"farm of {count}: ready in {' / '.join(f'{s:.2f}' for s in ready)} s, "
            f"RSS {rss / count / 1024:.1f} KiB and PSS {pss / count / 1024:.1f} KiB per server",
            flush=True,
        )
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the benchmark suite; write its README.")
    parser.add_argument("--duration", type=float, default=4.0, help="Seconds per load run.")
    parser.add_argument("--repeat", type=int, default=3, help="Rounds of load runs; best kept.")
    parser.add_argument("--generator-processes", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="2 s runs; 10,000 servers skipped.")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("README.md"))
    parser.add_argument("--save", type=Path, help="Also write the raw figures to this JSON file.")
    parser.add_argument("--render", type=Path, help="Only rewrite the README from saved figures.")
    args = parser.parse_args()
    settings = Settings(
        duration_s=2.0 if args.quick else args.duration,
        repeat=1 if args.quick else args.repeat,
        generator_processes=args.generator_processes,
        sizes=(500, 2000) if args.quick else (500, 2000, 10000),
    )
    if args.render:
        saved = json.loads(args.render.read_text())
        figures, elapsed = saved["figures"], saved["elapsed_s"]
        settings = Settings(**saved["settings"])
        command = saved["command"]
    else:
        began = time.monotonic()
        figures = load_sections(settings)
        figures["startup"] = startup_section(settings)
        command = _command(args)
        elapsed = time.monotonic() - began
        if args.save:
            saved = {"figures": figures, "command": command, "elapsed_s": elapsed}
            saved["settings"] = dataclasses.asdict(settings)
            args.save.write_text(json.dumps(saved, indent=1))
    text = report.readme(figures, command, settings.duration_s, settings.repeat, elapsed)
    args.output.write_text(text)
    print(f"wrote {args.output.name}")


def _command(args: argparse.Namespace) -> str:
    """The command that reproduces these figures (file options left out: no local paths)."""
    words = ["python3 -m benchmarks.run"]
    if args.quick:
        words.append("--quick")
    defaults = {"duration": 4.0, "repeat": 3, "generator_processes": 1}
    for name, default in defaults.items():
        if getattr(args, name) != default:
            words.append(f"--{name.replace('_', '-')} {getattr(args, name):g}")
    return " ".join(words)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
