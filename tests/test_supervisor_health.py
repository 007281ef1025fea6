"""The supervisor judges workers fairly: its own stalls are not theirs, a death is collected
without blocking its loop, restarts back off, and a slot that never boots stops the farm.

Each test runs a real Supervisor in this process (on uvloop, like `farm up`) with real
spawned workers, or with misbehaving entry points from tests/stub_workers.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from farm.config.plan import Plan, build_plan, default_servers
from farm.config.templates import default_template
from farm.errors import BootError
from farm.master.supervision.listeners import bind_all
from farm.master.supervision.slot import Slot, SlotState
from farm.master.supervision.supervisor import Supervisor, SupervisorOptions
from tests.conftest import start_farm
from tests.farmproc import HOST, free_port_range, wait_for

pytestmark = pytest.mark.timeout(180)


def small_plan(servers: int, workers: int) -> Plan:
    template = default_template()
    requests = default_servers(servers, HOST, free_port_range(servers), template.name)
    return build_plan(requests, {template.name: template}, workers)


async def until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `predicate` on the loop against a deadline (the supervisor runs meanwhile)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def run_supervised(
    plan: Plan,
    options: SupervisorOptions,
    test: Callable[[Supervisor], Coroutine[Any, Any, None]],
    entry: str | None = None,
    debug: bool = False,
) -> None:
    """Run `test` against a Supervisor on uvloop (asyncio's own loop in debug mode, which
    times every callback)."""
    sockets = bind_all(plan.servers())

    async def main() -> None:
        if entry is None:
            supervisor = Supervisor(plan, sockets, options)
        else:
            supervisor = Supervisor(plan, sockets, options, entry=entry)
        try:
            await test(supervisor)
        finally:
            await supervisor.stop()

    factory = None if debug else uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory, debug=debug) as runner:
        runner.run(main())


def respawned_after(slot: Slot, moment: float) -> Callable[[], bool]:
    return lambda: slot.spawned_at > moment


async def stall_in_an_io_callback(seconds: float) -> None:
    """Block the loop for `seconds` from inside an I/O callback, as a slow pipe reader or
    request handler would: the loop then runs its timers (the watchdog's wake-up) before
    it polls for I/O again (the heartbeats waiting in the pipes)."""
    loop = asyncio.get_running_loop()
    read, write = os.pipe()
    stalled = asyncio.Event()

    def stall() -> None:
        loop.remove_reader(read)
        time.sleep(seconds)
        stalled.set()

    try:
        loop.add_reader(read, stall)
        os.write(write, b"x")
        await stalled.wait()
    finally:
        os.close(read)
        os.close(write)


def test_a_stalled_master_kills_no_healthy_worker_but_a_stuck_worker_is_replaced() -> None:
    options = SupervisorOptions(heartbeat_interval_s=0.2, heartbeat_timeout_s=2.0)
    stall_s = 2 * options.heartbeat_timeout_s
    measured: dict[str, float] = {}

    async def test(supervisor: Supervisor) -> None:
        await asyncio.wait_for(supervisor.start(), 60)
        first, second = supervisor.slots
        pids = [first.pid, second.pid]
        # The master's loop stalls: the workers' heartbeats wait, unread, in their pipes.
        await stall_in_an_io_callback(stall_s)
        resumed = time.monotonic()
        await until(
            lambda: all(
                slot.restarts or slot.last_heartbeat > resumed + 0.5 for slot in supervisor.slots
            ),
            30,
            "heartbeats read after the stall",
        )
        assert [first.pid, second.pid] == pids, "a healthy worker was replaced"
        assert first.restarts == second.restarts == 0
        assert supervisor.stalled_s >= stall_s * 0.9
        # A worker that really stops answering is still replaced.
        assert pids[0] is not None
        os.kill(pids[0], signal.SIGSTOP)
        stopped = time.monotonic()
        await until(
            lambda: first.pid not in (None, pids[0]) and first.state is SlotState.READY,
            60,
            "the stopped worker to be replaced",
        )
        measured["replaced_after_s"] = time.monotonic() - stopped
        assert second.pid == pids[1] and second.restarts == 0

    run_supervised(small_plan(4, workers=2), options, test)
    print(f"a SIGSTOPped worker was replaced after {measured['replaced_after_s']:.2f} s")


def test_a_worker_whose_sentinel_closes_early_is_reaped_off_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The sentinel can close well before the process can be reaped (here: the child closes
    its descriptors and lingers). Waiting for the exit status on the loop would stall the
    master; the loop's debug mode reports any callback that runs long."""
    caplog.set_level(logging.WARNING, logger="asyncio")
    options = SupervisorOptions(max_boot_failures=1)

    async def test(supervisor: Supervisor) -> None:
        asyncio.get_running_loop().slow_callback_duration = 0.5
        with pytest.raises(BootError, match="failed to boot 1 times in a row"):
            await asyncio.wait_for(supervisor.start(), 60)
        assert supervisor.slots[0].restarts == 1

    run_supervised(
        small_plan(1, workers=1),
        options,
        test,
        entry="tests.stub_workers:close_fds_and_linger",
        debug=True,
    )
    slow = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert not slow, slow


def test_restarts_back_off_more_with_each_crash() -> None:
    backoff = (0.0, 1.0, 2.0)
    options = SupervisorOptions(backoff_s=backoff, stable_after_s=600.0)
    delays: list[float] = []

    async def test(supervisor: Supervisor) -> None:
        await asyncio.wait_for(supervisor.start(), 60)
        slot = supervisor.slots[0]
        for _ in backoff:
            await until(lambda: slot.state is SlotState.READY, 60, "the worker to be ready")
            assert slot.pid is not None
            os.kill(slot.pid, signal.SIGKILL)
            killed = time.monotonic()
            await until(respawned_after(slot, killed), 30, "the worker to be spawned again")
            delays.append(slot.spawned_at - killed)
        await until(lambda: slot.state is SlotState.READY, 60, "the last worker to be ready")
        assert slot.restarts == len(backoff)

    run_supervised(small_plan(2, workers=1), options, test)
    print("delays before each respawn: " + ", ".join(f"{d:.2f} s" for d in delays))
    assert delays[0] < backoff[1], delays  # the first crash restarts at once
    for delay, wanted in zip(delays[1:], backoff[1:], strict=True):
        assert delay >= wanted, delays


def test_a_slot_that_never_boots_stops_the_farm_with_one_line() -> None:
    options = SupervisorOptions(max_boot_failures=3, backoff_s=(0.0, 0.1))

    async def test(supervisor: Supervisor) -> None:
        with pytest.raises(BootError) as raised:
            await asyncio.wait_for(supervisor.start(), 60)
        message = str(raised.value)
        assert message == "worker 0 failed to boot 3 times in a row (last: exit code 1)"
        assert supervisor.slots[0].restarts == 3
        assert supervisor.slots[0].state is SlotState.STOPPED

    run_supervised(
        small_plan(2, workers=1), options, test, entry="tests.stub_workers:crash_at_once"
    )


def test_sigstop_of_the_master_restarts_no_worker() -> None:
    """A master stopped (SIGSTOP, a suspended VM) past the heartbeat timeout and resumed
    keeps every worker: the silence was its own."""
    timeout = SupervisorOptions().heartbeat_timeout_s
    farm = start_farm(4, workers=2)
    try:
        before = farm.wait_ready()["workers"]
        os.kill(farm.pid, signal.SIGSTOP)
        try:
            time.sleep(timeout + 2)  # not a wait for something: the stall itself
        finally:
            os.kill(farm.pid, signal.SIGCONT)
        resumed = time.monotonic()

        def judged() -> dict[str, Any] | None:
            # The watchdog looks every 0.5 s: a second after fresh heartbeats were read, it
            # has judged every worker since the resume.
            status = farm.status()
            fresh = all(w["heartbeat_age_s"] < 1.0 for w in status["workers"])
            return status if fresh and time.monotonic() > resumed + 1.5 else None

        after = wait_for(judged, 30, "fresh heartbeats after the resume")["workers"]
        assert [w["pid"] for w in after] == [w["pid"] for w in before]
        assert [w["restarts"] for w in after] == [0, 0]
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    assert "no heartbeat" not in stderr and "died" not in stderr, stderr
