"""What observing the system under test costs (issue 21's budget: CPU per request at most
5 % more, idle memory per server at most 2 KiB at 10,000 servers): the write journal and the
client statistics on, against a checkout from before them, in the same run.

    python3 -m benchmarks.bench_observe --baseline DIR [--servers 50] [--connections 20]
        [--rate 4000] [--duration 4] [--repeat 3] [--requests 200000] [--ref REF]
        [--in-process-only]

DIR is a checkout of the farm from before (e.g. `git archive b451582 | tar -x -C DIR`).
Three measures, each case in rounds (a burst from elsewhere spoils one run of several cases,
not every run of one), the best round kept and every round shown:
  - in process: a connection's `data_received`, one FC 3 x 10 frame per read, from a client
    with an address (so the poll bookkeeping runs), for the engine (and its fast path) at
    REF (git) and now; `--in-process-only` measures only this (DIR is then not read);
  - closed loop: `farm bench`'s engine, 1 worker, `--connections` x 1 in flight;
  - open loop: the same at a fixed `--rate` of requests/s (the generator far from saturated).
Server CPU per request is utime + stime of the farm's processes over the requests answered.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks import bench_fault_hotpath as hotpath
from benchmarks.bench_transports import Case, farm, measure, options
from benchmarks.procs import Server
from farm.worker import engine
from farm.worker.transports import connection as stream


class Peer(hotpath.Sink):
    """A transport that discards what it is given, from a client with an address."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40123) if name == "peername" else default


def in_process(ref: str, requests: int, rounds: int) -> dict[str, list[float]]:
    then = hotpath.baseline_module(ref, "engine.py")
    assert then is not None, f"no farm/worker/engine.py at {ref}"
    fastpath_then = hotpath.baseline_module(ref, "fastpath.py")
    if fastpath_then is not None:  # the engine at REF with the fast path at REF
        setattr(then, "fast_answer", fastpath_then.fast_answer)  # noqa: B010
    connection_then = hotpath.baseline_module(ref, "transports/connection.py")
    cases = {f"before ({ref})": (then, connection_then), "now": (engine, stream)}
    made = {}
    for name, (engine_module, connection_module) in cases.items():
        made[name] = hotpath.connection(engine_module, connection_module)
        made[name].connection_made(Peer())
    taken: dict[str, list[float]] = {name: [] for name in made}
    for _ in range(rounds):
        for name, connection in made.items():
            taken[name].append(per_request_us(connection, requests))
    return taken


def per_request_us(connection: Any, requests: int) -> float:
    """As bench_fault_hotpath's, with the worker's fold of the arrivals (once a second in a
    farm; here once per round, which folds as many per request) counted in."""
    receive = connection.data_received
    frame = hotpath.FRAME
    began = time.process_time()
    for _ in range(requests):
        receive(frame)
    clients = getattr(connection.device, "clients", None)
    if clients is not None:
        clients.fold()
    return 1e6 * (time.process_time() - began) / requests


def loops(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    cases = [Case("before (baseline checkout)", "tcp", args.baseline.resolve()), Case("now", "tcp")]
    servers: dict[str, Server] = {}
    rounds: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        try:
            for case in cases:
                servers[case.label] = farm(case, args.servers, Path(scratch))
            for number in range(args.repeat):
                print(f"round {number + 1} of {args.repeat}", flush=True)
                for case in cases:
                    closed = options(case, args.connections, args.duration, Path(scratch))
                    opened = replace(closed, rate=args.rate)
                    for loop, bench in (("closed", closed), ("open", opened)):
                        row = measure(servers[case.label], bench)
                        rounds.setdefault(f"{loop} loop, {case.label}", []).append(row)
        finally:
            for server in servers.values():
                server.stop()
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, help="A checkout from before (the loops).")
    parser.add_argument("--ref", default="b451582", help="git ref of the engine before.")
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--rate", type=float, default=4000.0)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--in-process-only", action="store_true", help="Skip the loops.")
    args = parser.parse_args()
    if args.baseline is None and not args.in_process_only:
        parser.error("--baseline DIR is needed for the loops (or give --in-process-only)")
    process = in_process(args.ref, args.requests, args.repeat)
    rounds = {} if args.in_process_only else loops(args)
    print()
    print("| measure | CPU per request | every round | vs before |")
    print("|---|---:|---|---:|")
    before = min(process[f"before ({args.ref})"])
    for name, taken in process.items():
        every = " / ".join(f"{each:.3f}" for each in taken)
        print(
            f"| in process, {name} | {min(taken):.3f} us | {every} | {min(taken) / before:.3f}x |"
        )
    for loop in ("closed", "open") if rounds else ():
        first = min(r["cpu_us"] for r in rounds[f"{loop} loop, before (baseline checkout)"])
        for label in (f"{loop} loop, before (baseline checkout)", f"{loop} loop, now"):
            runs = rounds[label]
            best = min(r["cpu_us"] for r in runs)
            every = " / ".join(f"{r['cpu_us']:.2f}" for r in runs)
            rate = max(r["requests_per_s"] for r in runs)
            print(f"| {label} ({rate:,.0f}/s) | {best:.2f} us | {every} | {best / first:.3f}x |")


if __name__ == "__main__":
    main()
