"""Live-value cost: 10,000 devices x 20 live points updated at 1 Hz (issue 3's budget: < 10% of
one core), against a per-point Python loop measured in the same run.

    python3 -m benchmarks.bench_ticker [--devices 10000] [--points 20] [--ticks 20]

Prints CPU seconds per tick for the farm's vectorised ticker (farm.worker.ticker) and for the
baseline, the share of one core each costs at one tick a second, and the ratio.
"""

from __future__ import annotations

import argparse
import math
import random
import struct
import time

from farm.config.plan import ServerRequest, build_plan
from farm.config.templates import (
    Behaviour,
    BehaviourKind,
    DeviceTemplate,
    Point,
    PointType,
    Table,
    UnitLayout,
)
from farm.worker.ticker import Ticker

KINDS = (
    Behaviour(kind=BehaviourKind.SINE, low=220, high=240, period_s=60, jitter=0.5),
    Behaviour(kind=BehaviourKind.RANDOM_WALK, low=0, high=100, step=2, value=50),
    Behaviour(kind=BehaviourKind.COUNTER, step=1, high=1e9),
    Behaviour(kind=BehaviourKind.RAMP, low=0, high=100, period_s=90),
    Behaviour(kind=BehaviourKind.SQUARE, low=0, high=1, period_s=10),
)
TYPES = (PointType.FLOAT32, PointType.UINT16, PointType.UINT32, PointType.INT16, PointType.UINT16)


def template(points: int) -> DeviceTemplate:
    live = []
    address = 0
    for i in range(points):
        kind = TYPES[i % len(TYPES)]
        live.append(
            Point(
                name=f"p{i}",
                unit_id=1,
                table=Table.INPUT_REGISTERS,
                address=address,
                type=kind,
                behaviour=KINDS[i % len(KINDS)],
            )
        )
        address += kind.registers
    return DeviceTemplate(
        name="bench", units=(UnitLayout(unit_id=1, input_registers=200),), points=tuple(live)
    )


def farm_ticker(devices: int, points: int) -> tuple[Ticker, float]:
    device = template(points)
    requests = [
        ServerRequest(name=f"d{i}", fleet="f", host="127.0.0.1", port=1, template="bench")
        for i in range(devices)
    ]
    plan = build_plan(requests, {"bench": device}, workers=1)
    (shard,) = plan.shards
    start = time.time()
    ticker = Ticker(memoryview(bytearray(shard.bank_bytes)), start)
    for spec in shard.servers:
        ticker.add(spec, device)
    ticker.freeze()
    ticker.initialize()
    return ticker, start


def naive_updates(
    devices: int, points: int
) -> tuple[bytearray, list[tuple[int, Point, random.Random]]]:
    """The obvious design: one Python object per point per device, packed one by one."""
    device = template(points)
    size = 400 * devices
    buf = bytearray(size)
    live = [
        (
            d * 400 + 2 * (p.address - device.points[0].address),  # input registers
            p,
            random.Random(d),
        )
        for d in range(devices)
        for p in device.points
    ]
    return buf, live


def naive_tick(buf: bytearray, live: list[tuple[int, Point, random.Random]], t: float) -> None:
    for offset, point, rng in live:
        b = point.behaviour
        if b.kind == "sine":
            value = (b.high + b.low) / 2 + (b.high - b.low) / 2 * math.sin(
                2 * math.pi * t / b.period_s
            )
        elif b.kind == "random_walk":
            value = min(b.high, max(b.low, b.value + rng.uniform(-b.step, b.step)))
        else:
            value = (t % b.period_s) / b.period_s * b.high
        if point.type is PointType.FLOAT32:
            struct.pack_into(">f", buf, offset, value)
        elif point.type is PointType.UINT32:
            struct.pack_into(">I", buf, offset, int(value) & 0xFFFFFFFF)
        else:
            struct.pack_into(">H", buf, offset, int(value) & 0xFFFF)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--ticks", type=int, default=20)
    args = parser.parse_args()

    ticker, start = farm_ticker(args.devices, args.points)
    before = time.process_time()
    for k in range(args.ticks):
        ticker.tick(start + k + 1.0)
    farm = (time.process_time() - before) / args.ticks

    buf, live = naive_updates(args.devices, args.points)
    before = time.process_time()
    baseline_ticks = max(1, args.ticks // 5)
    for k in range(baseline_ticks):
        naive_tick(buf, live, k + 1.0)
    naive = (time.process_time() - before) / baseline_ticks

    updates = args.devices * args.points
    print(f"{args.devices} devices x {args.points} live points = {updates} updates per tick")
    for label, seconds in (("farm ticker", farm), ("per-point loop", naive)):
        share = f"{seconds * 100:5.1f}% of one core at 1 Hz"
        print(f"{label:15} {seconds * 1000:8.1f} ms CPU per tick = {share}")
    print(f"ratio           {naive / farm:8.1f}x less CPU than the per-point loop")


if __name__ == "__main__":
    main()
