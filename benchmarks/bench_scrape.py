"""What metrics cost: rendering a scrape, and counting on the request path.

    python3 -m benchmarks.bench_scrape [--servers 10000] [--repeat 5] [--load-seconds 3]
    python3 -m benchmarks.bench_scrape --scrape-only    # part 1 alone
    python3 -m benchmarks.bench_scrape --ours-only      # part 1, the farm's renderer alone

1. Scrape: renders /metrics for a farm of --servers servers whose shared-memory counters
   hold realistic values (several function codes, exceptions, a filled histogram), with
   farm.master.metrics.servers (text format, then OpenMetrics), and beside it with
   prometheus_client's `generate_latest` on an equivalent
   registry, built two ways: the metric objects (Counter, Gauge, Histogram with labels)
   and a custom collector building metric families from the same arrays at each scrape.
   "Equivalent" is checked, not assumed: on a small farm all three texts parse to the
   same samples.
2. Counting, in process: CPU per request of the worker's `ModbusConnection` driven with
   FC 3 frames through a stand-in transport, against `BareConnection` below: the same
   class with its counting lines (and `Device.answer`'s) taken out of the real source at
   run time by benchmarks.uncounted, so it cannot drift from it. The two must produce the
   same bytes (checked before timing).
3. Counting, over sockets: the same two connection classes in a server subprocess on
   loopback ports, loaded by a closed-loop client in this process (1, then 8 requests in
   flight per connection) for --load-seconds per round, rounds alternating on/off. Both
   share a small machine with whatever else runs on it, so requests/s is noisy; the
   server's CPU per request is the steadier figure.

Prints one table per part with the ratios; there is no pass/fail here (tests hold behaviour,
this file holds numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from benchmarks.uncounted import without_counting
from farm.config.plan import Plan, Shard, build_plan, default_servers
from farm.config.templates import Identity, default_template
from farm.ipc import stats
from farm.ipc.banks import UnitBank
from farm.ipc.messages import Heartbeat
from farm.ipc.stats import ShardCounters
from farm.master.metrics.servers import FarmMetrics
from farm.master.supervision.slot import SlotState
from farm.master.supervision.supervisor import Supervisor
from farm.modbus import mbap, pdu
from farm.worker.engine import Device
from farm.worker.limits.guard import unlimited
from farm.worker.transports.connection import ModbusConnection

HOST = "127.0.0.1"
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
FC3_FRAME = mbap.frame(1, 1, pdu.read(3, 0, 10))


# -- a farm's worth of counters, without the farm ----------------------------------------


@dataclass(eq=False)
class _Slot:
    """What FarmMetrics reads of a supervisor slot."""

    shard: Shard
    counters: ShardCounters
    heartbeat: Heartbeat | None
    last_heartbeat: float
    state: SlotState = SlotState.READY
    restarts: int = 0
    servers_up: int = 0


@dataclass(eq=False)
class _Farm:
    plan: Plan
    slots: list[_Slot] = field(default_factory=list)

    def servers_ready(self) -> int:
        return sum(slot.servers_up for slot in self.slots)


def fill(counters: ShardCounters, rng: random.Random) -> None:
    """Counts a farm under a SCADA poll looks like: mostly FC 3, some writes, a few errors."""
    for position in range(counters.servers):
        slots = counters.server(position)
        reads = rng.randrange(1_000, 5_000_000)
        slots[stats.REQUEST_SLOT[3]] = reads
        slots[stats.REQUEST_SLOT[4]] = reads // 3
        if position % 3 == 0:
            slots[stats.REQUEST_SLOT[16]] = reads // 10
        if position % 7 == 0:
            slots[stats.EXCEPTION_SLOT[2]] = rng.randrange(1, 500)
        if position % 50 == 0:
            slots[stats.EXCEPTION_SLOT[11]] = rng.randrange(1, 50)
        total = reads + reads // 3 + (reads // 10 if position % 3 == 0 else 0)
        left = total
        for bucket in range(len(stats.DURATION_BOUNDS_NS) + 1):
            share = left * 3 // 4 if bucket < len(stats.DURATION_BOUNDS_NS) else left
            slots[stats.DURATION + bucket] = share
            left -= share
        slots[stats.DURATION_SUM_NS] = total * 80_000
        slots[stats.CONNECTIONS_OPEN] = rng.randrange(0, 3)
        slots[stats.CONNECTIONS_ACCEPTED] = rng.randrange(1, 40)
        slots[stats.BYTES_RECEIVED] = total * 12
        slots[stats.BYTES_SENT] = total * 29
        slots[stats.MALFORMED_FRAMES] = 1 if position % 97 == 0 else 0


def make_farm(servers: int, workers: int = 2, seed: int = 1) -> _Farm:
    template = default_template()
    requests = default_servers(servers, HOST, 10_000, template.name)
    plan = build_plan(requests, {template.name: template}, workers)
    rng = random.Random(seed)
    farm = _Farm(plan=plan)
    now = time.monotonic()
    for shard in plan.shards:
        counters = ShardCounters.create(shard.stats_size)
        fill(counters, rng)
        beat = Heartbeat(
            worker=shard.worker,
            servers_up=len(shard.servers),
            loop_lag_s=0.0004,
            cpu_s=12.5,
            rss_bytes=180_000_000,
            connections=0,
        )
        farm.slots.append(
            _Slot(
                shard=shard,
                counters=counters,
                heartbeat=beat,
                last_heartbeat=now - 0.2,
                servers_up=len(shard.servers),
            )
        )
    return farm


def close_farm(farm: _Farm) -> None:
    for slot in farm.slots:
        slot.counters.close()


# -- the same series through prometheus_client -----------------------------------------


def _per_server(farm: _Farm) -> Iterator[tuple[str, str, list[int]]]:
    """(server, worker, that server's slots) for every server."""
    for slot in farm.slots:
        values = slot.counters.snapshot()
        for spec in slot.shard.servers:
            start = ShardCounters.offset(spec.stats_index)
            yield spec.name, str(slot.shard.worker), values[start : start + stats.SERVER_SLOTS]


_CODES = [(str(code), stats.REQUEST_SLOT[code]) for code in stats.FUNCTION_CODES]
_CODES.append(("other", stats.EXCEPTIONS - 1))
_EXCEPTIONS = [(str(code), stats.EXCEPTION_SLOT[code]) for code in stats.EXCEPTION_CODES]
_EXCEPTIONS.append(("other", stats.DURATION - 1))
_PLAIN = (
    ("connections_open", stats.CONNECTIONS_OPEN),
    ("connections_accepted", stats.CONNECTIONS_ACCEPTED),
    ("received_bytes", stats.BYTES_RECEIVED),
    ("sent_bytes", stats.BYTES_SENT),
    ("malformed_frames", stats.MALFORMED_FRAMES),
)


def _cumulative(slots: list[int]) -> list[int]:
    counts = slots[stats.DURATION : stats.DURATION_SUM_NS]
    return [sum(counts[: i + 1]) for i in range(len(counts))]


def object_registry(farm: _Farm) -> CollectorRegistry:
    """prometheus_client's metric objects, set to the farm's values."""
    registry = CollectorRegistry(auto_describe=False)
    server = ["server", "worker"]
    requests = Counter("modbus_farm_requests", "", [*server, "function_code"], registry=registry)
    exceptions = Counter(
        "modbus_farm_exceptions", "", [*server, "exception_code"], registry=registry
    )
    duration = Histogram(
        "modbus_farm_request_duration_seconds",
        "",
        server,
        buckets=stats.DURATION_BOUNDS_S,
        registry=registry,
    )
    plain = {
        name: (Gauge if name == "connections_open" else Counter)(
            "modbus_farm_" + name, "", server, registry=registry
        )
        for name, _ in _PLAIN
    }
    for name, worker, slots in _per_server(farm):
        for code, index in _CODES:
            if slots[index]:
                requests.labels(name, worker, code).inc(slots[index])
        for code, index in _EXCEPTIONS:
            if slots[index]:
                exceptions.labels(name, worker, code).inc(slots[index])
        if slots[stats.DURATION_SUM_NS]:
            child = duration.labels(name, worker)
            # No public setter for a histogram's buckets: set the private values once.
            counts = slots[stats.DURATION : stats.DURATION_SUM_NS]
            for bucket, count in zip(child._buckets, counts, strict=True):  # noqa: SLF001
                bucket.set(count)
            child._sum.set(slots[stats.DURATION_SUM_NS] / 1e9)  # noqa: SLF001
        for family, index in _PLAIN:
            metric = plain[family].labels(name, worker)
            if isinstance(metric, Gauge):
                metric.set(slots[index])
            else:
                metric.inc(slots[index])
    return registry


class ArrayCollector(Collector):
    """A custom collector: metric families built from the arrays at every scrape."""

    def __init__(self, farm: _Farm) -> None:
        self.farm = farm

    def collect(self) -> Iterator[Metric]:
        server = ["server", "worker"]
        requests = CounterMetricFamily(
            "modbus_farm_requests", "", labels=[*server, "function_code"]
        )
        exceptions = CounterMetricFamily(
            "modbus_farm_exceptions", "", labels=[*server, "exception_code"]
        )
        duration = HistogramMetricFamily("modbus_farm_request_duration_seconds", "", labels=server)
        plain: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            name: (GaugeMetricFamily if name == "connections_open" else CounterMetricFamily)(
                "modbus_farm_" + name, "", labels=server
            )
            for name, _ in _PLAIN
        }
        les = [*map(str, stats.DURATION_BOUNDS_S), "+Inf"]
        for name, worker, slots in _per_server(self.farm):
            for code, index in _CODES:
                if slots[index]:
                    requests.add_metric([name, worker, code], slots[index])
            for code, index in _EXCEPTIONS:
                if slots[index]:
                    exceptions.add_metric([name, worker, code], slots[index])
            if slots[stats.DURATION_SUM_NS]:
                buckets = list(zip(les, _cumulative(slots), strict=True))
                duration.add_metric(
                    [name, worker], buckets, sum_value=slots[stats.DURATION_SUM_NS] / 1e9
                )
            for family, index in _PLAIN:
                plain[family].add_metric([name, worker], slots[index])
        yield requests
        yield exceptions
        yield duration
        yield from plain.values()
        yield InfoMetricFamily("modbus_farm_build", "", value={"version": "0"})


def collector_registry(farm: _Farm) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ArrayCollector(farm))
    return registry


# The per-server families the registries above build (the farm renders more, from the same
# arrays the same way: server_info, crc_errors, connections_closed, ...).
_COMPARED = {
    "modbus_farm_requests",
    "modbus_farm_exceptions",
    "modbus_farm_request_duration_seconds",
    *(f"modbus_farm_{name}" for name, _ in _PLAIN),
}


def server_samples(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    """The per-server samples of a scrape, comparable across renderers."""
    found = set()
    for family in text_string_to_metric_families(text):
        if family.name not in _COMPARED:
            continue
        for sample in family.samples:
            if "server" in sample.labels:
                labels = tuple(sorted(sample.labels.items()))
                found.add((sample.name, labels, round(sample.value, 9)))
    return found


def check_equivalent() -> None:
    farm = make_farm(60)
    try:
        ours = FarmMetrics(cast(Supervisor, farm)).render().decode()
        objects = generate_latest(object_registry(farm)).decode()
        collected = generate_latest(collector_registry(farm)).decode()
    finally:
        close_farm(farm)
    mine, theirs, built = server_samples(ours), server_samples(objects), server_samples(collected)
    if not mine == theirs == built:
        raise SystemExit(
            f"renderers disagree: {len(mine ^ theirs)} samples differ from the object "
            f"registry, {len(mine ^ built)} from the collector"
        )


@dataclass(frozen=True)
class Timing:
    wall_s: float  # median of the renders
    cpu_s: float  # median CPU time of this process: steadier on a shared machine
    size: int  # bytes of one page


def timed(render: Callable[[], bytes], repeat: int) -> Timing:
    walls, cpus, size = [], [], 0
    for _ in range(repeat):
        began, began_cpu = time.perf_counter(), time.process_time()
        size = len(render())
        walls.append(time.perf_counter() - began)
        cpus.append(time.process_time() - began_cpu)
    return Timing(statistics.median(walls), statistics.median(cpus), size)


def bench_scrape(servers: int, repeat: int, others: bool = True) -> None:
    """Print the table; `others`: also time prometheus_client's two registries (slow)."""
    check_equivalent()
    farm = make_farm(servers)
    try:
        metrics = FarmMetrics(cast(Supervisor, farm))
        ours = timed(metrics.render, repeat)
        rows = [("farm.master.metrics.servers (hand-rendered from the arrays)", ours)]
        rows.append(("the same, OpenMetrics", timed(lambda: metrics.render(True), repeat)))
        if others:
            registry = object_registry(farm)
            rows.append(
                (
                    "generate_latest, metric objects",
                    timed(lambda: generate_latest(registry), repeat),
                )
            )
            collected = collector_registry(farm)
            rows.append(
                (
                    "generate_latest, collector from the arrays",
                    timed(lambda: generate_latest(collected), repeat),
                )
            )
    finally:
        close_farm(farm)
    print(f"\nscrape of {servers} servers (median of {repeat}; the same samples in all)")
    print(f"  {'renderer':<60} {'ms':>8} {'CPU ms':>8} {'MB':>6} {'vs ours':>8}")
    for name, timing in rows:
        print(
            f"  {name:<60} {timing.wall_s * 1e3:8.1f} {timing.cpu_s * 1e3:8.1f}"
            f" {timing.size / 1e6:6.1f} {timing.cpu_s / ours.cpu_s:7.1f}x"
        )
    verdict = "within" if ours.wall_s <= 0.25 else "OVER"
    print(f"  farm.master.metrics.servers: {ours.wall_s * 1e3:.0f} ms, {verdict} the 250 ms budget")


# -- counting on the request path -------------------------------------------------------


# The same classes with their counting lines taken out at run time (benchmarks.uncounted):
# what is timed against the real ones is the real code minus the counting, never a copy.
BareDevice = without_counting(Device, "answer")
BareConnection = without_counting(
    ModbusConnection, "connection_made", "connection_lost", "data_received", "_send"
)


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
        return ("127.0.0.1", 40000) if name == "peername" else default


def make_device(bare: bool, counters: Any = None) -> Device:
    memory = bytearray(2000)
    view = memoryview(memory)
    bank = UnitBank(
        unit_id=1,
        coils=view[0:500],
        discrete_inputs=view[500:1000],
        holding_registers=view[1000:1500],
        input_registers=view[1500:2000],
    )
    kind = BareDevice if bare else Device
    return kind("device-0000", {1: bank}, Identity(), counters)


def connect(bare: bool, counters: Any = None) -> tuple[ModbusConnection, _Sink]:
    kind = BareConnection if bare else ModbusConnection
    device = make_device(bare, counters)
    connection = kind(device, unlimited(device.name, device.counters))
    sink = _Sink()
    connection.connection_made(cast(Any, sink))
    return connection, sink


def engine_cost(bare: bool, frames_per_read: int, requests: int) -> float:
    """Nanoseconds of CPU per request through data_received."""
    shard = None if bare else ShardCounters.create(1)
    try:
        connection, _ = connect(bare, shard.server(0) if shard else None)
        data = FC3_FRAME * frames_per_read
        reads = requests // frames_per_read
        began = time.process_time_ns()
        for _ in range(reads):
            connection.data_received(data)
        spent = time.process_time_ns() - began
        connection.connection_lost(None)
        del connection  # it views the segment, which cannot be unmapped under a view
    finally:
        if shard is not None:
            shard.close()
    return spent / (reads * frames_per_read)


def check_same_bytes() -> None:
    rng = random.Random(7)
    frames = [FC3_FRAME, mbap.frame(2, 1, pdu.read(3, 990, 20))]
    frames += [
        mbap.frame(3, 1, pdu.write_register(10, 4321)),
        b"\x00\x04\x00\x00\x00\x02\x01\x63",
    ]
    for _ in range(200):
        data = b"".join(rng.choice(frames) for _ in range(rng.randrange(1, 5)))
        outputs = []
        for bare in (False, True):
            connection, sink = connect(bare)
            connection.data_received(data)
            outputs.append(sink.last)
        if outputs[0] != outputs[1]:
            raise SystemExit(
                "the uncounted connection answers other bytes: see benchmarks/uncounted.py"
            )


def bench_engine(requests: int, rounds: int) -> None:
    check_same_bytes()
    print(f"\ncounting on the request path, in process (FC 3 x 10 registers, median of {rounds})")
    print(f"  {'frames per read':<16} {'counted ns/req':>15} {'bare ns/req':>12} {'cost':>7}")
    for frames in (1, 8):
        counted, bare = [], []
        for _ in range(rounds):
            counted.append(engine_cost(False, frames, requests))
            bare.append(engine_cost(True, frames, requests))
        on, off = statistics.median(counted), statistics.median(bare)
        print(f"  {frames:<16} {on:15.0f} {off:12.0f} {(on / off - 1) * 100:6.1f}%")


# -- over sockets ------------------------------------------------------------------------


def serve(bare: bool, port_base: int, count: int, lifetime: float) -> None:
    """The server subprocess: `count` devices on consecutive ports; exits on EOF of stdin."""
    import uvloop

    # Out here, not in main(): the counters must outlive every device that views them.
    shard = None if bare else ShardCounters.create(count)
    kind = BareConnection if bare else ModbusConnection

    async def main() -> None:
        loop = asyncio.get_running_loop()
        servers = []
        for i in range(count):
            device = make_device(bare, shard.server(i) if shard else None)
            guard = unlimited(device.name, device.counters)

            def factory(device: Device = device, guard: Any = guard) -> ModbusConnection:
                return kind(device, guard)

            servers.append(await loop.create_server(factory, HOST, port_base + i))
        print("ready", flush=True)
        done = asyncio.Event()
        loop.add_reader(sys.stdin.fileno(), done.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), lifetime)
        for server in servers:
            server.close()

    uvloop.run(main())
    if shard is not None:
        shard.close()  # unlinks; the mapping goes with the process (devices still view it)
    sys.stdout.flush()
    os._exit(0)  # as a worker does: no finalizer may try to unmap what the devices view


class _Client(asyncio.Protocol):
    """Closed loop: `depth` requests written at once, the next batch when all are answered."""

    def __init__(self, depth: int, deadline: float, limit: int, done: asyncio.Future[None]) -> None:
        self.batch = FC3_FRAME * depth
        self.depth, self.deadline, self.limit, self.done = depth, deadline, limit, done
        self.answered = 0
        self.pending = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.batch)

    def data_received(self, data: bytes) -> None:
        self.pending += len(data)
        if self.pending < 29 * self.depth:  # FC 3 answers of 10 registers: 29 bytes each
            return
        self.pending = 0
        self.answered += self.depth
        assert self.transport is not None
        if self.answered >= self.limit or time.monotonic() >= self.deadline:
            self.transport.close()
        else:
            self.transport.write(self.batch)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _factory(client: _Client) -> Callable[[], _Client]:
    return lambda: client


async def _load(port_base: int, count: int, depth: int, seconds: float, limit: int) -> int:
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + seconds
    clients = []
    for i in range(count):
        done: asyncio.Future[None] = loop.create_future()
        client = _Client(depth, deadline, limit, done)
        await loop.create_connection(_factory(client), HOST, port_base + i)
        clients.append(client)
    await asyncio.wait_for(asyncio.gather(*(c.done for c in clients)), timeout=seconds + 10)
    return sum(c.answered for c in clients)


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def _free_base(count: int) -> int:
    import socket

    for _ in range(200):
        base = random.randrange(20_000, 30_000)
        try:
            holders = []
            for i in range(count):
                sock = socket.socket()
                holders.append(sock)
                sock.bind((HOST, base + i))
            return base
        except OSError:
            continue
        finally:
            for sock in holders:
                sock.close()
    raise RuntimeError("no free port range")


def socket_round(bare: bool, count: int, depth: int, seconds: float) -> tuple[float, float]:
    """(requests/s, server CPU µs per request) for one round."""
    import uvloop

    base = _free_base(count)
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_scrape", "--serve", "bare" if bare else "counted",
         "--port-base", str(base), "--count", str(count), "--lifetime", str(seconds + 30)],
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


def bench_sockets(seconds: float, rounds: int, connections: int) -> None:
    print(
        f"\ncounting over loopback sockets ({connections} servers, one connection each, "
        f"{seconds:.0f} s per round, {rounds} rounds alternating, medians)"
    )
    print(
        f"  {'in flight':<10} {'counted req/s':>14} {'bare req/s':>11} {'cost':>7}"
        f" {'counted µs/req':>15} {'bare µs/req':>12} {'cost':>7}"
    )
    for depth in (1, 8):
        results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(rounds):
            for bare in (False, True):
                results[bare].append(socket_round(bare, connections, depth, seconds))
        on_rate = statistics.median(r for r, _ in results[False])
        off_rate = statistics.median(r for r, _ in results[True])
        on_cost = statistics.median(c for _, c in results[False])
        off_cost = statistics.median(c for _, c in results[True])
        print(
            f"  {depth:<10} {on_rate:14.0f} {off_rate:11.0f} {(1 - on_rate / off_rate) * 100:6.1f}%"
            f" {on_cost:15.2f} {off_cost:12.2f} {(on_cost / off_cost - 1) * 100:6.1f}%"
        )
    print("  (cost: throughput lost, and server CPU added per request, by counting)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--load-seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--scrape-only", action="store_true", help="part 1 alone")
    parser.add_argument(
        "--ours-only", action="store_true", help="part 1 without prometheus_client's registries"
    )
    parser.add_argument("--serve", choices=("counted", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--port-base", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--lifetime", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve == "bare", args.port_base, args.count, args.lifetime)
        return
    disable_created_metrics()
    print(f"modbus-farm metrics benchmark: python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    bench_scrape(args.servers, args.repeat, others=not args.ours_only)
    if args.scrape_only or args.ours_only:
        return
    bench_engine(args.requests, args.rounds)
    if args.load_seconds > 0:
        bench_sockets(args.load_seconds, args.rounds, args.connections)


if __name__ == "__main__":
    main()
