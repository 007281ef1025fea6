"""Each behaviour over simulated time, on real banks laid out by the plan."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from farm.config import codec
from farm.config.plan import ServerRequest, build_plan, point_offset
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

pytestmark = pytest.mark.timeout(60)
T0 = 1_000_000.0  # the farm's start, on the monotonic clock


def rig(
    behaviour: Behaviour, servers: int = 3, kind: PointType = PointType.FLOAT32
) -> tuple[Ticker, list[int], Point]:
    live = Point(
        name="p",
        unit_id=1,
        table=Table.HOLDING_REGISTERS,
        address=10,
        type=kind,
        behaviour=behaviour,
    )
    template = DeviceTemplate(
        name="t", units=(UnitLayout(unit_id=1, holding_registers=20),), points=(live,)
    )
    requests = [
        ServerRequest(name=f"s{i}", fleet="f", host="127.0.0.1", port=1 + i, template="t")
        for i in range(servers)
    ]
    plan = build_plan(requests, {"t": template}, workers=1, seed=5)
    (shard,) = plan.shards
    buf = memoryview(bytearray(shard.bank_bytes))
    ticker = Ticker(buf, T0)
    for spec in shard.servers:
        ticker.add(spec, template)
    ticker.freeze()
    ticker.initialize()
    offsets = [point_offset(spec, template, live) for spec in shard.servers]
    return ticker, offsets, live


def values(ticker: Ticker, offsets: list[int], live: Point) -> list[float]:
    width = codec.byte_width(live)
    data = np.stack([ticker.bytes[o : o + width] for o in offsets])
    return [float(v) for v in codec.decode(live, data)]


def run(
    behaviour: Behaviour, times: list[float], kind: PointType = PointType.FLOAT32
) -> list[float]:
    ticker, offsets, live = rig(behaviour, 1, kind)
    seen = []
    for t in times:
        ticker.tick(T0 + t)
        seen.append(values(ticker, offsets, live)[0])
    return seen


def test_constant_is_written_at_start_and_never_ticks() -> None:
    ticker, offsets, live = rig(Behaviour(kind=BehaviourKind.CONSTANT, value=42.5))
    assert values(ticker, offsets, live) == [42.5] * 3
    assert ticker.live() == []


def test_counter_steps_and_wraps_to_low() -> None:
    seen = run(
        Behaviour(kind=BehaviourKind.COUNTER, value=10, step=5, low=0, high=20), [0, 1, 2, 3, 4]
    )
    assert seen == [15, 20, 0, 5, 10]


def test_ramp() -> None:
    ramp = Behaviour(kind=BehaviourKind.RAMP, low=0, high=100, period_s=100)
    assert run(ramp, [0, 25, 50, 99, 125]) == pytest.approx([0, 25, 50, 99, 25])


def test_sine() -> None:
    sine = Behaviour(kind=BehaviourKind.SINE, low=180, high=260, period_s=60)
    assert run(sine, [0, 15, 30, 45]) == pytest.approx([220, 260, 220, 180], abs=1e-3)


def test_square() -> None:
    square = Behaviour(kind=BehaviourKind.SQUARE, low=0, high=1, period_s=10)
    assert run(square, [1, 4, 6, 9, 11]) == [1, 1, 0, 0, 1]


def test_replay_steps_through_samples_one_per_interval() -> None:
    replay = Behaviour(kind=BehaviourKind.REPLAY, samples=(1.0, 2.0, 3.0), interval_s=10)
    assert run(replay, [0, 10, 25, 30, 41]) == [1, 2, 3, 1, 2]


def test_random_walk_stays_in_bounds_and_moves() -> None:
    walk = Behaviour(kind=BehaviourKind.RANDOM_WALK, low=950, high=1050, step=20, value=1000)
    seen = run(walk, [float(t) for t in range(300)])
    assert all(950 <= v <= 1050 for v in seen)
    assert len(set(seen)) > 100
    assert max(abs(b - a) for a, b in itertools.pairwise(seen)) <= 20 + 1e-3


def test_random_walk_is_deterministic_per_server_seed() -> None:
    walk = Behaviour(kind=BehaviourKind.RANDOM_WALK, low=0, high=100, step=5, value=50)
    first, offsets, live = rig(walk)
    second, _, _ = rig(walk)
    for t in range(20):
        first.tick(T0 + t)
        second.tick(T0 + t)
    a, b = values(first, offsets, live), values(second, offsets, live)
    assert a == b  # same seeds, same values
    assert len(set(a)) == 3  # but each server walks its own way


def test_jitter_is_bounded_and_deterministic() -> None:
    noisy = Behaviour(kind=BehaviourKind.SINE, low=100, high=100, jitter=0.5)
    first, offsets, live = rig(noisy)
    second, _, _ = rig(noisy)
    first.tick(T0 + 3)
    second.tick(T0 + 3)
    a = values(first, offsets, live)
    assert a == values(second, offsets, live)
    assert all(abs(v - 100) <= 0.5 for v in a) and len(set(a)) == 3


def test_points_update_only_on_their_interval() -> None:
    slow = Behaviour(kind=BehaviourKind.COUNTER, value=0, step=1, high=100, interval_s=5)
    ticker, offsets, live = rig(slow, 1)
    seen = []
    for t in range(11):
        ticker.tick(T0 + t)
        seen.append(values(ticker, offsets, live)[0])
    assert seen == [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3]


def test_counter_carries_on_from_a_written_value() -> None:
    """A client's write, or a restarted worker, continues from the bank's value."""
    ticker, offsets, live = rig(
        Behaviour(kind=BehaviourKind.COUNTER, value=0, step=1, high=1000), 1, PointType.UINT16
    )
    ticker.tick(T0)
    ticker.bytes[offsets[0] : offsets[0] + 2] = np.frombuffer(
        (500).to_bytes(2, "big"), dtype=np.uint8
    )
    ticker.tick(T0 + 1)
    assert values(ticker, offsets, live) == [501]
