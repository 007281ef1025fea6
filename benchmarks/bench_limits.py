"""What backpressure, connection limits and timeouts cost on the request path.

    python3 -m benchmarks.bench_limits [--before REV] [--requests 200000] [--rounds 5]
                                       [--load-seconds 3] [--connections 50]

Before and after, measured in the same run: "before" is farm/worker/engine.py as it was at
git revision REV (default: the last commit before backpressure, limits and timeouts), loaded
from git into this process beside today's; "after" is today's engine, whose connection adds
a chunk check per frame and a paused flag per read (backpressure), one store per read (the
idle timer wheel) and one check per read (the frame timeout); the limits themselves work at
connect and close only. Both must produce the same bytes (checked before timing).

1. In process (the hot path): CPU per request through data_received, FC 3 x 10 registers,
   1 and 8 frames per read, through a stand-in transport.
2. Over loopback sockets: each engine in a server subprocess (uvloop, --connections devices,
   one client connection each; today's with a worker's real `WorkerConnections`, its wheel
   ticking, and the default limits), loaded by a closed-loop client in this process, 1
   then 8 requests in flight per connection, rounds alternating. requests/s is noisy on a
   shared machine; the server's CPU per request is steadier.

No pass/fail here: the numbers go to benchmarks/README.md by hand, with this command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from benchmarks.bench_scrape import _cpu, _free_base, _load, make_device
from farm.config.templates import ConnectionLimits
from farm.ipc.stats import ShardCounters, local_counters
from farm.modbus import mbap, pdu
from farm.worker.engine import Device
from farm.worker.events import EventLog
from farm.worker.limits.guard import ServerConnections, WorkerConnections
from farm.worker.transports.connection import ModbusConnection

HOST = "127.0.0.1"
FC3_FRAME = mbap.frame(1, 1, pdu.read(3, 0, 10))
BEFORE = "50f21b1"  # main just before backpressure, limits and timeouts landed
ROOT = Path(__file__).resolve().parent.parent


def engine_at(revision: str) -> ModuleType:
    """farm/worker/engine.py as it was at `revision`, as a module of its own."""
    try:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{revision}:farm/worker/engine.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"cannot read the engine at {revision} from git: {exc}") from exc
    spec = importlib.util.spec_from_loader(f"engine_{revision}", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"engine@{revision}", "exec"), module.__dict__)
    return module


class _Sink:
    """Stands in for a transport: keeps the last write."""

    def __init__(self) -> None:
        self.last = b""

    def write(self, data: bytes) -> None:
        self.last = data

    def close(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def guard(device: Device, worker: WorkerConnections) -> ServerConnections:
    return ServerConnections(device.name, ConnectionLimits(), device.counters, worker)


def worker_connections() -> WorkerConnections:
    return WorkerConnections(cap=100_000, events=EventLog(0, send=lambda message: None))


def connect(before: ModuleType | None, counters: Any) -> tuple[Any, _Sink]:
    """A connection of today's engine (before=None) or of the old one, to a fresh device."""
    device = make_device(False, counters)
    if before is None:
        connection: Any = ModbusConnection(device, guard(device, worker_connections()))
    else:
        connection = before.ModbusConnection(device, set())
    sink = _Sink()
    connection.connection_made(cast(Any, sink))
    return connection, sink


def engine_cost(before: ModuleType | None, frames_per_read: int, requests: int) -> float:
    """Nanoseconds of CPU per request through data_received."""
    connection, _ = connect(before, local_counters())
    data = FC3_FRAME * frames_per_read
    reads = requests // frames_per_read
    began = time.process_time_ns()
    for _ in range(reads):
        connection.data_received(data)
    spent = time.process_time_ns() - began
    connection.connection_lost(None)
    return spent / (reads * frames_per_read)


def check_same_bytes(before: ModuleType) -> None:
    rng = random.Random(7)
    frames = [FC3_FRAME, mbap.frame(2, 1, pdu.read(3, 990, 20))]
    frames += [
        mbap.frame(3, 1, pdu.write_register(10, 4321)),
        b"\x00\x04\x00\x00\x00\x02\x01\x63",
    ]
    for _ in range(200):
        data = b"".join(rng.choice(frames) for _ in range(rng.randrange(1, 5)))
        outputs = []
        for engine in (before, None):
            connection, sink = connect(engine, local_counters())
            connection.data_received(data)
            outputs.append(sink.last)
        if outputs[0] != outputs[1]:
            raise SystemExit("the engines before and after answer differently")


def bench_engine(before: ModuleType, requests: int, rounds: int) -> None:
    check_same_bytes(before)
    print(f"\nthe hot path, in process (FC 3 x 10 registers, median of {rounds})")
    print(f"  {'frames per read':<16} {'before ns/req':>14} {'after ns/req':>13} {'cost':>7}")
    for frames in (1, 8):
        olds, news = [], []
        for _ in range(rounds):
            olds.append(engine_cost(before, frames, requests))
            news.append(engine_cost(None, frames, requests))
        old, new = statistics.median(olds), statistics.median(news)
        print(f"  {frames:<16} {old:14.0f} {new:13.0f} {(new / old - 1) * 100:6.1f}%")


# -- over sockets ------------------------------------------------------------------------


def serve(revision: str | None, port_base: int, count: int, lifetime: float) -> None:
    """The server subprocess: `count` devices on consecutive ports, with the engine at
    `revision` (None: today's); exits on EOF of stdin."""
    import uvloop

    before = None if revision is None else engine_at(revision)
    shard = ShardCounters.create(count)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        worker = worker_connections()
        worker.wheel.start(loop)
        servers = []
        for i in range(count):
            device = make_device(False, shard.server(i))
            limits: Any = guard(device, worker) if before is None else set()
            kind = ModbusConnection if before is None else before.ModbusConnection

            def factory(device: Device = device, limits: Any = limits, kind: Any = kind) -> Any:
                return kind(device, limits)

            servers.append(await loop.create_server(factory, HOST, port_base + i))
        print("ready", flush=True)
        done = asyncio.Event()
        loop.add_reader(sys.stdin.fileno(), done.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), lifetime)
        worker.wheel.stop()
        for server in servers:
            server.close()

    uvloop.run(main())
    shard.close()
    sys.stdout.flush()
    os._exit(0)  # as a worker does: no finalizer may try to unmap what the devices view


def socket_round(
    revision: str | None, count: int, depth: int, seconds: float
) -> tuple[float, float]:
    """(requests/s, server CPU µs per request) for one round; other ports if the first are
    taken meanwhile (this machine is shared)."""
    for attempt in range(3):
        try:
            return _socket_round(revision, count, depth, seconds)
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _socket_round(
    revision: str | None, count: int, depth: int, seconds: float
) -> tuple[float, float]:
    import uvloop

    base = _free_base(count)
    engine = ["--serve", revision or "today"]
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_limits", *engine, "--port-base", str(base),
         "--count", str(count), "--lifetime", str(seconds + 30)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("the server subprocess did not start")
        cpu_before = _cpu(server.pid)
        began = time.monotonic()
        answered = uvloop.run(_load(base, count, depth, seconds, limit=5_000_000))
        elapsed = time.monotonic() - began
        cpu = _cpu(server.pid) - cpu_before
    finally:
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
    return answered / elapsed, cpu / max(answered, 1) * 1e6


def bench_sockets(revision: str, seconds: float, rounds: int, connections: int) -> None:
    print(
        f"\nover loopback sockets ({connections} devices, one connection each, {seconds:g} s "
        f"per round, {rounds} rounds alternating, medians)"
    )
    print(
        f"  {'in flight':<10} {'before req/s':>13} {'after req/s':>12} {'cost':>7}"
        f" {'before µs/req':>14} {'after µs/req':>13} {'cost':>7}"
    )
    for depth in (1, 8):
        results: dict[str | None, list[tuple[float, float]]] = {revision: [], None: []}
        for round_number in range(rounds):
            order = (revision, None) if round_number % 2 else (None, revision)
            for engine in order:
                results[engine].append(socket_round(engine, connections, depth, seconds))
        old_rate = statistics.median(r for r, _ in results[revision])
        new_rate = statistics.median(r for r, _ in results[None])
        old_cost = statistics.median(c for _, c in results[revision])
        new_cost = statistics.median(c for _, c in results[None])
        lost = (1 - new_rate / old_rate) * 100
        added = (new_cost / old_cost - 1) * 100
        print(
            f"  {depth:<10} {old_rate:13.0f} {new_rate:12.0f} {lost:6.1f}%"
            f" {old_cost:14.2f} {new_cost:13.2f} {added:6.1f}%"
        )
    print("  (cost: throughput lost, and server CPU added per request)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, help="Git revision of the engine before.")
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--load-seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port-base", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--lifetime", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        revision = None if args.serve == "today" else args.serve
        serve(revision, args.port_base, args.count, args.lifetime)
        return
    print(
        f"modbus-farm limits benchmark: python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
        f"before: the engine at {args.before}"
    )
    bench_engine(engine_at(args.before), args.requests, args.rounds)
    if args.load_seconds > 0:
        bench_sockets(args.before, args.load_seconds, args.rounds, args.connections)


if __name__ == "__main__":
    main()
