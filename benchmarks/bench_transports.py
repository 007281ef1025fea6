"""Transports (issue 14's budgets): server CPU per request of RTU over TCP, UDP and TLS
against TCP's, TLS's handshake cost per connection, and TCP and RTU before and after (another
checkout's farm, measured in the same run).

    python3 -m benchmarks.bench_transports [--servers 50] [--connections 20] [--duration 4]
        [--repeat 3] [--handshakes 300] [--baseline DIR] [--transports tcp,rtu-over-tcp,...]

Every farm has one worker, so its CPU is one process's (plus the idle master); the load is
`farm bench`'s engine in this process, closed loop, FC 3 x 10 registers, one request in flight
per connection. Cases run in rounds (a burst from elsewhere on this shared machine spoils one
run of several cases, not every run of one); each row keeps the round with the least server
CPU per request, and every round's figure rides along. `--baseline DIR`: a checkout of the
farm (e.g. `git archive main | tar -x -C DIR`) whose TCP and RTU over TCP are measured too,
run from DIR; `--transports` measures only those named (and TCP, the yardstick). Prints
a Markdown table; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from benchmarks import procs
from benchmarks.procs import Server
from farm.bench.command import run_bench, summarize
from farm.bench.spec import BenchOptions, parse_mix, split
from farm.bench.transports import ClientTls
from farm.cli.selfsigned import write_certificates
from farm.modbus import mbap, pdu

PDUS = parse_mix("3:100", address=0, quantity=10)
REQUEST = mbap.frame(1, 1, pdu.read(3, 0, 10))
TRANSPORTS = ("tcp", "rtu-over-tcp", "udp", "tls")
BASELINE = ("tcp", "rtu-over-tcp")  # measured from --baseline's checkout too


@dataclass(frozen=True, slots=True)
class Case:
    label: str
    transport: str
    checkout: Path | None = None  # None: this one


def farm(case: Case, servers: int, certs: Path) -> Server:
    port_base = procs.free_port_range(servers)
    api_port = procs.free_port_range(1)
    while port_base <= api_port < port_base + servers:
        api_port = procs.free_port_range(1)
    command = [
        sys.executable, "-m", "farm", "up", "--count", str(servers), "--workers", "1",
        "--port-base", str(port_base), "--api-port", str(api_port), "--log-level", "warning",
    ]  # fmt: skip
    if case.transport != "tcp":
        command += ["--transport", case.transport]
    if case.transport == "tls":
        command += ["--certs", str(certs)]
    env, cwd = None, None
    if case.checkout is not None:
        env, cwd = {**os.environ, "PYTHONPATH": str(case.checkout)}, str(case.checkout)
    server = Server(case.label, command, servers, port_base, api_port, env=env, cwd=cwd)
    return procs.start(lambda: server)


def options(case: Case, connections: int, duration: float, certs: Path) -> BenchOptions:
    tls = None
    if case.transport == "tls":
        tls = ClientTls(
            ca=str(certs / "ca.pem"),
            certificate=str(certs / "client.pem"),
            key=str(certs / "client.key"),
        )
    return BenchOptions(
        connections=connections,
        duration_s=duration,
        timeout_s=2.0,
        transport=case.transport,
        tls=tls,
    )


def measure(server: Server, bench: BenchOptions) -> dict[str, Any]:
    before = procs.cpu_seconds_precise(server.pids)
    results = run_bench(split(server.targets, PDUS, bench))
    cpu = procs.cpu_seconds_precise(server.pids) - before
    row = summarize(results, bench, server.count)
    answered = row["responses"]
    row["cpu_us"] = 1e6 * cpu / answered if answered else float("inf")
    errors = row["timeouts"] + row["connection_errors"] + row["lost"] + row["unexpected"]
    row["errors"] = errors
    print(
        f"  {server.name:<28} {row['requests_per_s']:>9,.0f} requests/s  "
        f"{row['cpu_us']:6.1f} us server CPU/request  {errors} errors",
        flush=True,
    )
    return row


async def _connect_cycle(target: tuple[str, int], context: ssl.SSLContext | None, n: int) -> None:
    """Open a connection, one request and its answer, close; `n` times."""
    host, port = target
    for _ in range(n):
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
        writer.write(REQUEST)
        await reader.readexactly(9 + 20)
        writer.close()
        await writer.wait_closed()


def connection_cost(server: Server, context: ssl.SSLContext | None, count: int) -> float:
    """Server CPU per connection (connect, one request, close), in microseconds."""
    before = procs.cpu_seconds_precise(server.pids)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_connect_cycle(server.targets[0], context, count))
    return 1e6 * (procs.cpu_seconds_precise(server.pids) - before) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--handshakes", type=int, default=300)
    parser.add_argument("--baseline", type=Path, help="Another checkout's farm, for TCP and RTU.")
    parser.add_argument(
        "--transports", default=",".join(TRANSPORTS), help="Which to measure (tcp always)."
    )
    args = parser.parse_args()
    chosen = {"tcp", *args.transports.split(",")}
    cases = [Case(name, name) for name in TRANSPORTS if name in chosen]
    if args.baseline is not None:
        for name in reversed(BASELINE):
            if name in chosen:
                label = f"{name}, baseline checkout"
                cases.insert(0, Case(label, name, args.baseline.resolve()))
    with tempfile.TemporaryDirectory() as scratch:
        certs = Path(scratch)
        write_certificates(certs, "operator", ("127.0.0.1",), 1, force=True)
        servers: dict[str, Server] = {}
        try:
            for case in cases:
                servers[case.label] = farm(case, args.servers, certs)
            rounds: dict[str, list[dict[str, Any]]] = {c.label: [] for c in cases}
            for number in range(args.repeat):
                print(f"round {number + 1} of {args.repeat}", flush=True)
                for case in cases:
                    bench = options(case, args.connections, args.duration, certs)
                    rounds[case.label].append(measure(servers[case.label], bench))
            client = ssl.create_default_context(cafile=str(certs / "ca.pem"))
            client.load_cert_chain(certs / "client.pem", certs / "client.key")
            handshake = {"tcp": connection_cost(servers["tcp"], None, args.handshakes)}
            if "tls" in servers:
                handshake["tls"] = connection_cost(servers["tls"], client, args.handshakes)
        finally:
            for server in servers.values():
                server.stop()
    report(cases, rounds, handshake, args)


def report(
    cases: list[Case],
    rounds: dict[str, list[dict[str, Any]]],
    handshake: dict[str, float],
    args: argparse.Namespace,
) -> None:
    best = {label: min(runs, key=lambda r: r["cpu_us"]) for label, runs in rounds.items()}
    tcp = best["tcp"]["cpu_us"]
    print()
    print(
        f"{args.servers} servers, 1 worker; {args.connections} connections x 1 in flight, "
        f"FC 3 x 10 registers, {args.duration:g} s x {args.repeat} rounds"
    )
    print()
    print("| transport | requests/s | server CPU/request | vs tcp | every round | errors |")
    print("|---|---:|---:|---:|---|---:|")
    for case in cases:
        row = best[case.label]
        every = " / ".join(f"{r['cpu_us']:.1f}" for r in rounds[case.label])
        print(
            f"| {case.label} | {row['requests_per_s']:,.0f} | {row['cpu_us']:.1f} us | "
            f"{row['cpu_us'] / tcp:.2f}x | {every} us | {row['errors']} |"
        )
    if "tls" not in handshake:
        return
    print()
    print(
        f"Connections ({args.handshakes} in a row: connect, one request, close), server CPU "
        f"per connection: tcp {handshake['tcp']:.0f} us, tls {handshake['tls']:.0f} us; "
        f"the TLS handshake costs {handshake['tls'] - handshake['tcp']:.0f} us more."
    )


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"({time.monotonic() - started:.0f} s)")
