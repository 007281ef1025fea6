"""Start-up, before and after a change, rounds interleaved (issue 24, 3: 500 servers ready
in at most 0.5 s, 10,000 in at most 1.5 s).

    python3 -m benchmarks.bench_startup [--before DIR] [--sizes 500 10000] [--rounds 3]
        [--workers 2] [--one-port-from 2000]

Each round starts one farm per tree and size, `benchmarks.procs.farm(N, workers)` as
benchmarks/run.py's section 3 does (from --one-port-from servers on, `procs.ip_farm`: all
on one port at 127.83.0.1 and the addresses after it, as benchmarks.bench_memory does):
ready = `GET /api/v1/status` answers servers_ready == N, timed from the process start.
Also read: when the API first answered, when the last worker process started (after the
master's, /proc: in 10 ms ticks), and the master's and the workers' CPU time at ready.
DIR is a copy of the farm from before (e.g. `git archive main | tar -x -C DIR`); its farm
runs from DIR (`python -m farm` puts the working directory first on sys.path). Without
--before, only this tree is measured.

Prints one line per farm, then median and range per tree and size, with the load average
before and after; nothing is asserted (tests hold behaviour, this holds numbers).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import procs

HERE = str(Path(__file__).resolve().parent.parent)
FIRST_IP = "127.83.0.1"


@dataclass
class Timed(procs.Server):
    """A farm that also notes when its API first answered."""

    api_s: float = 0.0

    def _farm_ready(self) -> dict[str, Any] | None:
        status = super()._farm_ready()  # raises OSError until the API listens
        if not self.api_s:
            self.api_s = time.monotonic() - self.started_at
        return status


@dataclass
class Figures:
    ready_s: list[float] = field(default_factory=list)
    api_s: list[float] = field(default_factory=list)
    master_cpu_s: list[float] = field(default_factory=list)
    workers_cpu_s: list[float] = field(default_factory=list)
    spawned_s: list[float] = field(default_factory=list)


def started_at(pid: int) -> float:
    """When a process started, in seconds since boot (/proc/PID/stat field 22, in ticks)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[19]) / procs.CLOCK_TICK


def one_farm(tree: str, count: int, workers: int, one_port_from: int, scratch: Path) -> Timed:
    def factory() -> Timed:
        if count >= one_port_from:
            plain = procs.ip_farm(count, workers, FIRST_IP, scratch)
        else:
            plain = procs.farm(count, workers)
        return Timed(plain.name, plain.command, count, plain.port_base, plain.api_port, cwd=tree)

    server = procs.start(factory)
    assert isinstance(server, Timed)
    return server


def measure(tree: str, count: int, settings: argparse.Namespace, into: Figures) -> str:
    server = one_farm(tree, count, settings.workers, settings.one_port_from, settings.scratch)
    try:
        master, *others = server.pids
        into.master_cpu_s.append(procs.cpu_seconds([master]))
        into.workers_cpu_s.append(procs.cpu_seconds(others))
        into.spawned_s.append(max(started_at(pid) for pid in others) - started_at(master))
    finally:
        server.stop()
    into.ready_s.append(server.ready_s)
    into.api_s.append(server.api_s)
    return (
        f"ready {server.ready_s:.2f} s (API first answered at {server.api_s:.2f} s, workers "
        f"started {into.spawned_s[-1]:.2f} s after the master), CPU at "
        f"ready: master {into.master_cpu_s[-1]:.2f} s, workers {into.workers_cpu_s[-1]:.2f} s"
    )


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="a copy of the farm from before, run from there")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 10000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--one-port-from",
        type=int,
        default=2000,
        help="farms of this many servers or more listen at their own addresses on one port "
        "(procs.ip_farm: so many consecutive free ports are rarely there on a shared box)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:  # the ip_farm's config file
        args.scratch = Path(scratch)
        run(args)


def run(args: argparse.Namespace) -> None:
    trees = {"after": HERE} if not args.before else {"before": args.before, "after": HERE}
    figures = {(name, size): Figures() for name in trees for size in args.sizes}
    load_at_start = os.getloadavg()
    for round_number in range(args.rounds):
        for size in args.sizes:
            for name, tree in trees.items():
                line = measure(tree, size, args, figures[(name, size)])
                print(f"round {round_number + 1}, {name}, {size}: {line}", flush=True)
    load_at_end = os.getloadavg()
    print(
        f"\nload average (1, 5, 15 min) at start {load_at_start[0]:.2f} {load_at_start[1]:.2f} "
        f"{load_at_start[2]:.2f}, at end {load_at_end[0]:.2f} {load_at_end[1]:.2f} "
        f"{load_at_end[2]:.2f}; median (range) over {args.rounds} rounds, {args.workers} workers"
    )
    print(
        "| servers | tree | ready s | API first answered s | workers started s | CPU master s "
        "| CPU workers s |"
    )
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for name in trees:
            got = figures[(name, size)]
            print(
                f"| {size:,} | {name} | {spread(got.ready_s)} | {spread(got.api_s)} | "
                f"{spread(got.spawned_s)} | "
                f"{spread(got.master_cpu_s)} | {spread(got.workers_cpu_s)} |"
            )


if __name__ == "__main__":
    main()
