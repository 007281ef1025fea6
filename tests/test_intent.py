"""Any order of fault add, clear and expiry, server stop and start, scale and scenario
steps ends with exactly the servers that should be down down, however slow the workers.

The master's parts (supervisor, switch, fault table, scaler, scenario steps) run in this
process on uvloop, as in `farm up`; the workers are real spawned processes that read every
message of the master late (tests/stub_workers.py:slow_pipe), as on a loaded box. What is
down is checked the way a client sees it: a TCP connection refused, or accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farm.config.faults.selection import Target
from farm.config.faults.spec import parse_fault
from farm.config.growth import default_fleet
from farm.config.plan import build_plan, default_servers
from farm.config.scenario.model import Step
from farm.config.templates import default_template
from farm.master.faults.table import FaultTable
from farm.master.fleet.inventory import Inventory
from farm.master.fleet.scale import Scaler
from farm.master.fleet.switch import CannotStart, Switch
from farm.master.scenario.steps import StepActions
from farm.master.supervision.listeners import bind_all
from farm.master.supervision.supervisor import Supervisor, SupervisorOptions
from tests.farmproc import HOST, free_port_range, refused, squatter

pytestmark = pytest.mark.timeout(300)
BASE, MOST = 4, 6  # servers at start; the fleet scales between 2 and MOST
SETTLE_S = 20.0  # slow workers confirm each message 0.2 s late: wide margin


def name(index: int) -> str:
    return f"device-{index:04d}"


@dataclass
class Farm:
    """A farm's master parts in this process, on one loop kept across examples."""

    runner: asyncio.Runner
    port_base: int
    supervisor: Supervisor
    switch: Switch
    faults: FaultTable
    scaler: Scaler
    steps: StepActions
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def run(self, coroutine: Any) -> Any:
        return self.runner.run(coroutine)


@pytest.fixture(scope="module")
def farm() -> Iterator[Farm]:
    template = default_template()
    port_base = free_port_range(MOST)
    requests = default_servers(BASE, HOST, port_base, template.name)
    plan = build_plan(requests, {template.name: template}, workers=2)
    plan = replace(plan, fleets=(default_fleet(BASE, HOST, port_base, template.name),))
    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)

    async def build() -> Farm:
        options = SupervisorOptions(heartbeat_timeout_s=5.0)
        supervisor = Supervisor(
            plan, bind_all(plan.servers()), options, entry="tests.stub_workers:slow_pipe"
        )
        inventory, switch = Inventory(supervisor), Switch(supervisor)
        faults = FaultTable(supervisor, switch)
        scaler = Scaler(supervisor, (inventory.refresh, switch.refresh, faults.refresh))
        steps = StepActions(faults, switch, inventory, scaler.scale, scaler.counts)
        await asyncio.wait_for(supervisor.start(), 60)
        return Farm(runner, port_base, supervisor, switch, faults, scaler, steps)

    built = runner.run(build())
    try:
        yield built
    finally:
        runner.run(built.faults.close())
        runner.run(built.supervisor.stop())
        runner.close()


@dataclass
class Model:
    """What should be down, kept by the test alone."""

    servers: list[str] = field(default_factory=lambda: [name(i) for i in range(BASE)])
    stopped: set[str] = field(default_factory=set)  # by the API or a scenario step
    faults: dict[int, tuple[set[str], float | None]] = field(default_factory=dict)  # id -> end

    def down(self, now: float) -> set[str]:
        held = {
            server
            for servers, end in self.faults.values()
            if end is None or end > now
            for server in servers
        }
        return (self.stopped | held) & set(self.servers)


OPS = st.one_of(
    st.tuples(
        st.just("fault"),
        st.sampled_from(["offline", "reboot"]),
        st.sets(st.integers(0, MOST - 1), min_size=1, max_size=3),
        st.sampled_from([None, 0.05, 0.1, 0.3]),
    ),
    st.tuples(st.just("clear"), st.integers(0, 5)),
    st.tuples(st.just("stop"), st.integers(0, MOST - 1)),
    st.tuples(st.just("start"), st.integers(0, MOST - 1)),
    st.tuples(st.just("step"), st.sets(st.integers(0, MOST - 1), min_size=1, max_size=2)),
    st.tuples(st.just("scale"), st.integers(2, MOST)),
    st.tuples(st.just("pause"), st.sampled_from([0.0, 0.05, 0.15, 0.3])),
)


async def play(farm: Farm, model: Model, ops: list[tuple[Any, ...]]) -> None:
    """Do `ops` one after the other without waiting for the workers (but a scale, which
    waits for itself), as API calls that come in quick succession would."""
    steps: list[tuple[Step, list[str]]] = []
    for op in ops:
        kind = op[0]
        present = (
            [each for each in (name(i) for i in op[2]) if each in model.servers]
            if (kind == "fault")
            else []
        )
        if kind == "fault" and present:
            spec: dict[str, Any] = {"kind": op[1], "target": {"servers": present}}
            if op[3] is not None:
                spec["duration"] = op[3]
            fault = farm.faults.add(parse_fault(spec))
            end = None if op[3] is None else fault.end
            model.faults[fault.id] = (set(present), end)
        elif kind == "clear" and model.faults:
            fault_id = sorted(model.faults)[op[1] % len(model.faults)]
            farm.faults.remove(fault_id)
            del model.faults[fault_id]
        elif kind in ("stop", "start") and name(op[1]) in model.servers:
            server = name(op[1])
            call = farm.switch.stop if kind == "stop" else farm.switch.start
            farm.tasks.append(asyncio.create_task(call(server), name=server))
            await asyncio.sleep(0)  # its intent taken now, its confirmation whenever
            (model.stopped.add if kind == "stop" else model.stopped.discard)(server)
        elif kind == "step":
            targets = tuple(each for each in (name(i) for i in op[1]) if each in model.servers)
            if targets:
                step = Step(
                    index=len(steps), where="test", name="stop", action="stop", at=0.0,
                    duration=None, target=Target(servers=targets),
                )  # fmt: skip
                stopping = asyncio.create_task(farm.steps.run(step))
                farm.tasks.append(stopping)
                await asyncio.sleep(0)
                model.stopped.update(targets)
        elif kind == "scale":
            await farm.scaler.scale("default", op[1])
            model.servers = [name(i) for i in range(op[1])]
            model.stopped &= set(model.servers)
            for servers, _ in model.faults.values():
                servers &= set(model.servers)
        elif kind == "pause":
            await asyncio.sleep(op[1])


async def settled(farm: Farm, model: Model) -> None:
    """Wait for every call and fault duration to end, then until a client sees exactly the
    servers the model says down refused (and every other one accepting)."""
    results = await asyncio.gather(*farm.tasks, return_exceptions=True)
    tasks = list(farm.tasks)
    farm.tasks.clear()
    for task, result in zip(tasks, results, strict=True):
        if not isinstance(result, BaseException):
            continue
        if isinstance(result, CannotStart):  # a start an offline fault still holds: expected
            continue
        if isinstance(result, KeyError) and task.get_name() not in model.servers:
            continue  # a start or stop of a server a later scale-down removed: no such server
        raise result
    ends = [end for _, end in model.faults.values() if end is not None]
    if ends:
        await asyncio.sleep(max(0.0, max(ends) - time.monotonic()) + 0.05)
    await farm.faults.settle()
    want = model.down(time.monotonic())
    deadline = time.monotonic() + SETTLE_S
    while True:
        seen = await asyncio.to_thread(observe, farm, model.servers)
        stopped = {each for slot in farm.supervisor.slots for each in slot.stopped}
        if seen == want == stopped:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"down: {sorted(seen)}, stopped: {sorted(stopped)}, should be: {sorted(want)}"
            )
        await asyncio.sleep(0.1)


def observe(farm: Farm, servers: list[str]) -> set[str]:
    return {
        server
        for server in servers
        if refused(farm.port_base + int(server.split("-")[1]), timeout=2.0)
    }


async def reset(farm: Farm, model: Model) -> None:
    farm.faults.clear()
    await farm.steps.undo()
    await farm.scaler.scale("default", BASE)
    for index in range(BASE):
        with contextlib.suppress(CannotStart):
            await farm.switch.start(name(index))
    await farm.faults.settle()
    model.servers, model.stopped, model.faults = [name(i) for i in range(BASE)], set(), {}
    await settled(farm, model)


def test_an_offline_fault_that_ends_before_its_stop_is_confirmed_leaves_nothing_down(
    farm: Farm,
) -> None:
    """The issue's reproduction: a worker that takes 0.2 s over each message, a 100 ms
    offline fault (on the old code the fault expired, the server stayed stopped)."""
    model = Model()

    async def test() -> None:
        await reset(farm, model)
        await play(farm, model, [("fault", "offline", {1}, 0.1), ("fault", "reboot", {2}, 0.05)])
        await settled(farm, model)

    farm.run(test())


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(OPS, min_size=3, max_size=10))
def test_any_interleaving_ends_with_exactly_the_right_servers_down(
    farm: Farm, ops: list[tuple[Any, ...]]
) -> None:
    model = Model()

    async def test() -> None:
        await reset(farm, model)
        await play(farm, model, ops)
        await settled(farm, model)

    farm.run(test())


def test_a_server_that_cannot_listen_again_says_why_and_comes_back_when_asked(
    farm: Farm,
) -> None:
    """Its port held by another program (possible only once its reservation is gone):
    the start is refused naming the address, the reason is the server's `error` (API and
    page), and a start once the port is free brings it back."""
    model = Model()

    async def test() -> None:
        await reset(farm, model)
        server = name(0)
        await farm.switch.stop(server)
        (slot,) = [slot for slot in farm.supervisor.slots if server in slot.stopped]
        spec = next(spec for spec in slot.shard.servers if spec.name == server)
        slot.reserved.pop(spec.index).close()  # as when it could not be reserved
        with squatter(spec.port):
            with pytest.raises(CannotStart, match=f"cannot listen on {HOST}:{spec.port}"):
                await farm.switch.start(server)
            located = Inventory(farm.supervisor).get(server)
            assert located is not None and located.error is not None
            assert "another program listens there now" in located.error
        await farm.switch.start(server)
        assert Inventory(farm.supervisor).get(server).error is None  # type: ignore[union-attr]
        await settled(farm, model)

    farm.run(test())
