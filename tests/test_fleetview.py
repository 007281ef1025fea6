"""The fleet view's producer (farm.master.fleetview.view) on counters laid out as in a farm: cells
grouped by fleet in name order, one byte per cell from state and rate, deltas holding only what
changed, and one event shared by every page."""

from __future__ import annotations

import asyncio
import base64
import json
from types import SimpleNamespace
from typing import Any, cast

from farm.config.faults.kinds import KIND_TABLE, KINDS
from farm.config.plan import ServerRequest, build_plan
from farm.config.templates import default_template
from farm.ipc import stats
from farm.ipc.stats import ShardCounters
from farm.master.fleetview.stream import MAX_BACKLOG
from farm.master.fleetview.view import (
    ERRORING,
    FAULTED,
    OFFLINE,
    UP,
    FleetView,
    ViewSources,
)
from farm.master.supervision.supervisor import Supervisor
from tests.test_metrics import in_memory


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fake_farm(fleets: dict[str, int], workers: int = 2) -> Any:
    """A supervisor's worth of slots over private-memory counters, fleets in the given order."""
    requests = [
        ServerRequest(
            name=f"{fleet}-{i}", fleet=fleet, host="127.0.0.1", port=0, template="default"
        )
        for fleet, count in fleets.items()
        for i in range(count)
    ]
    plan = build_plan(requests, {"default": default_template()}, workers)
    slots = [
        SimpleNamespace(
            shard=shard,
            counters=in_memory(len(shard.servers)),
            state="ready",
            failed={},
            stopped=set(),
            pid=1000 + shard.worker,
            last_heartbeat=99.5,
            restarts=0,
            servers_up=len(shard.servers),
        )
        for shard in plan.shards
    ]
    return SimpleNamespace(
        slots=slots,
        plan=plan,
        stopping=False,
        servers_ready=lambda: sum(s.servers_up for s in slots if s.state == "ready"),
    )


def event(raw: bytes) -> tuple[str, dict[str, Any]]:
    lines = dict(line.split(": ", 1) for line in raw.decode().strip().splitlines())
    return lines["event"], json.loads(lines["data"])


def count(farm: Any, name: str, slot: int, n: int) -> None:
    """Add n to one counter slot (stats offsets) of the server called `name`."""
    for each in farm.slots:
        for position, spec in enumerate(each.shard.servers):
            if spec.name == name:
                counters: ShardCounters = each.counters
                counters.server(position)[slot] += n
                return
    raise KeyError(name)


def make_view(farm: Any, clock: Clock, sources: ViewSources | None = None) -> FleetView:
    # A one-second window and interval: each tick's rate is the difference since the last.
    return FleetView(
        cast(Supervisor, farm), sources=sources, interval_s=1.0, window_s=1.0, clock=clock
    )


def tick(view: FleetView, clock: Clock) -> dict[str, Any]:
    clock.now += 1.0
    name, data = event(view.tick())
    assert name == "tick"
    return data


def changes(view: FleetView, data: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """The tick's cells as {server: (state, rate bucket)}."""
    names = event(view.layout_event.split(b"\n", 1)[1])[1]["names"]
    cells = data["cells"]
    return {
        names[c]: (code >> 3, code & 7) for c, code in zip(cells[::2], cells[1::2], strict=True)
    }


def test_cells_are_grouped_by_fleet_in_name_order() -> None:
    """Not by worker (server i goes to worker i mod 2): meters-10 after meters-9, whichever
    worker hosts it, so a server is found by eye where its name says."""
    farm = fake_farm({"meters": 11, "plcs": 3})
    view = make_view(farm, Clock())
    name, layout = event(view.layout_event.split(b"\n", 1)[1])
    assert name == "layout"
    groups = [(g["fleet"], g["start"], g["count"]) for g in layout["groups"]]
    assert groups == [("meters", 0, 11), ("plcs", 11, 3)]
    assert layout["names"] == [f"meters-{i}" for i in range(11)] + ["plcs-0", "plcs-1", "plcs-2"]
    assert layout["workers"] == [i % 2 for i in range(11)] + [1, 0, 1]
    assert layout["cells"] == 14
    assert layout["states"] == ["up", "erroring", "faulted", "offline"]


def test_a_tick_carries_only_the_cells_that_changed() -> None:
    farm = fake_farm({"meters": 6})
    clock = Clock()
    view = make_view(farm, clock)
    assert changes(view, tick(view, clock)) == {}  # every cell starts up and idle

    count(farm, "meters-1", stats.REQUEST_SLOT[3], 50)
    count(farm, "meters-4", stats.REQUEST_SLOT[4], 5)
    count(farm, "meters-4", stats.EXCEPTION_SLOT[2], 5)
    data = tick(view, clock)
    # 50/s is in the bucket up to 100 (3); 5/s up to 10 (2), with exceptions: erroring.
    assert changes(view, data) == {"meters-1": (UP, 3), "meters-4": (ERRORING, 2)}
    assert data["totals"]["requests_per_s"] == 55.0
    assert data["totals"]["exceptions_per_s"] == 5.0

    count(farm, "meters-1", stats.REQUEST_SLOT[3], 2000)
    data = tick(view, clock)
    assert changes(view, data) == {"meters-1": (UP, 5), "meters-4": (UP, 0)}
    assert changes(view, tick(view, clock)) == {"meters-1": (UP, 0)}
    assert changes(view, tick(view, clock)) == {}

    count(farm, "meters-5", stats.MALFORMED_FRAMES, 1)  # a bad frame is an error too
    assert changes(view, tick(view, clock)) == {"meters-5": (ERRORING, 0)}


def test_offline_and_faulted_servers() -> None:
    farm = fake_farm({"meters": 6})
    clock = Clock()
    faulted: set[str] = set()
    sources = ViewSources(
        faulted=lambda: faulted,
        faults_active=lambda: len(faulted),
        scenario=lambda: {"name": "storm", "step": 2},
    )
    view = make_view(farm, clock, sources)
    tick(view, clock)

    farm.slots[1].state = "restarting"  # worker 1 hosts meters-1, -3, -5
    data = tick(view, clock)
    assert changes(view, data) == {f"meters-{i}": (OFFLINE, 0) for i in (1, 3, 5)}
    assert [w["state"] for w in data["totals"]["workers"]] == ["ready", "restarting"]

    # Replaced between two ticks: down for one tick all the same, then up.
    farm.slots[1].state = "ready"
    farm.slots[0].restarts += 1
    assert changes(view, tick(view, clock)) == {
        **{f"meters-{i}": (OFFLINE, 0) for i in (0, 2, 4)},
        **{f"meters-{i}": (UP, 0) for i in (1, 3, 5)},
    }
    assert changes(view, tick(view, clock)) == {f"meters-{i}": (UP, 0) for i in (0, 2, 4)}

    farm.slots[0].failed["meters-2"] = object()  # its port could not be bound
    faulted.update({"meters-4", "no-such-server"})
    farm.slots[1].stopped.add("meters-1")  # stopped through the API
    data = tick(view, clock)
    assert changes(view, data) == {
        "meters-1": (OFFLINE, 0),
        "meters-2": (OFFLINE, 0),
        "meters-4": (FAULTED, 0),
    }
    assert data["totals"]["faults_active"] == 2
    assert data["totals"]["scenario"] == {"name": "storm", "step": 2}

    # Offline wins over faulted: a server that is down answers nothing at all.
    faulted.add("meters-1")
    assert changes(view, tick(view, clock)) == {}


def test_fault_kinds_travel_as_sparse_masks_of_the_cells_that_changed() -> None:
    """Each faulted cell's kinds, as a bit mask over the layout's `fault_kinds`: every cell
    with faults in a snapshot, only the masks that changed in a tick, nothing while the
    fault table's mapping is the same object."""
    farm = fake_farm({"meters": 6})
    clock = Clock()
    masks: dict[str, int] = {}
    source = [masks]
    view = make_view(farm, clock, ViewSources(fault_kinds=lambda: source[0]))
    layout = event(view.layout_event.split(b"\n", 1)[1])[1]
    assert [k["kind"] for k in layout["fault_kinds"]] == list(KINDS)
    marks = [k["mark"] for k in layout["fault_kinds"]]
    assert len(set(marks)) == len(marks) and all(m.isalpha() and m.isupper() for m in marks)
    assert all(len(m) == 1 for m in marks)
    assert tick(view, clock)["faults"] == []

    bit = {name: 1 << i for i, name in enumerate(KINDS)}
    source[0] = {"meters-2": bit["delay"], "meters-4": bit["stuck"] | bit["drop"], "gone": 1}
    names = layout["names"]
    data = tick(view, clock)
    got = dict(zip(data["faults"][::2], data["faults"][1::2], strict=True))
    assert {names[c]: m for c, m in got.items()} == {
        "meters-2": bit["delay"],
        "meters-4": bit["stuck"] | bit["drop"],
    }
    assert tick(view, clock)["faults"] == []  # the same mapping: nothing to send
    name, snapshot = event(view.snapshot())
    assert name == "snapshot"
    assert snapshot["faults"] == data["faults"]  # every cell with faults, to a new page

    source[0] = {"meters-4": bit["stuck"]}  # delay ended on meters-2, drop on meters-4
    data = tick(view, clock)
    got = dict(zip(data["faults"][::2], data["faults"][1::2], strict=True))
    assert {names[c]: m for c, m in got.items()} == {"meters-2": 0, "meters-4": bit["stuck"]}
    assert KIND_TABLE[bit["stuck"].bit_length() - 1].mark == "S"


def test_without_sources_the_totals_say_not_available() -> None:
    farm = fake_farm({"meters": 2})
    clock = Clock()
    view = make_view(farm, clock)
    totals = tick(view, clock)["totals"]
    assert totals["faults_active"] is None
    assert totals["scenario"] is None
    assert totals["servers_ready"] == totals["servers_total"] == 2
    assert totals["workers"][0] == {
        "worker": 0,
        "pid": 1000,
        "state": "ready",
        "servers": 1,
        "heartbeat_age_s": 0.5 + 1.0,
        "restarts": 0,
    }


def test_every_page_gets_the_same_event_and_a_slow_page_is_dropped() -> None:
    farm = fake_farm({"meters": 4})

    async def main() -> None:
        view = FleetView(cast(Supervisor, farm), interval_s=0.01, window_s=0.02)
        count(farm, "meters-2", stats.REQUEST_SLOT[3], 7)
        reader, stuck = view.subscribe(), view.subscribe()
        assert reader.pending[0] is stuck.pending[0] is view.layout_event
        name, snapshot = event(reader.pending[1])
        assert name == "snapshot"
        assert base64.b64decode(snapshot["codes"]) == view.codes.tobytes() == bytes(4)

        seen: list[bytes] = []
        while not stuck.closed:  # `stuck` never reads: it is dropped after MAX_BACKLOG events
            got = await asyncio.wait_for(reader.next(), 5)
            assert got is not None
            seen.append(got)
            if len(seen) > 2 and stuck.pending:
                assert seen[-1] in stuck.pending  # equal, and the very same object
                assert any(e is seen[-1] for e in stuck.pending)
        assert stuck not in view.subscribers
        assert await stuck.next() is None
        assert len(seen) >= MAX_BACKLOG - 2
        assert all(event(e)[0] == "tick" for e in seen[2:])

        view.unsubscribe(reader)
        assert await reader.next() is None
        await asyncio.wait_for(_until(lambda: view._task is None), 5)  # the producer stops
        await view.stop()

    asyncio.run(main())


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.01)
