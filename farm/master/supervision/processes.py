"""A slot's worker process: how one is made and what it is given, and how all are ended.

Used by farm.master.supervision.supervisor alone, which decides when: a worker is spawned into a
slot
with its end of a pipe and the slot's listening sockets, then told its part (`Assign`); a
process the supervisor is done with is forgotten (its readers removed, replies still
awaited answered with None); the stop sequence asks every worker to stop and SIGKILLs what
is left after the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence
from typing import Any

from farm.config.plan import Plan
from farm.ipc.channel import PipeFull
from farm.ipc.messages import ActiveFaults, Assign, Connection, Stop
from farm.ipc.spawn import InheritedSockets, run_entry
from farm.master.logs import tag
from farm.master.supervision.slot import Slot, SlotState, WorkerProcess

log = logging.getLogger("farm")


def new_process(context: Any, entry: str, slot: Slot) -> tuple[WorkerProcess, Connection, Any]:
    """A worker process for `slot`, not started, and the two ends of its pipe (ours first)."""
    ours, theirs = context.Pipe(duplex=True)
    process = context.Process(
        target=run_entry,
        args=(entry, theirs, InheritedSockets(tuple(slot.sockets.items()))),
        name=f"farm-worker-{slot.shard.worker}",
        daemon=True,
    )
    return process, ours, theirs


def assignment(
    slot: Slot,
    plan: Plan,
    *,
    heartbeat_interval_s: float,
    origin: float,
    faults: ActiveFaults,
    log_level: int,
) -> Assign:
    """What a worker spawned into `slot` is told to serve."""
    return Assign(
        worker=slot.shard.worker,
        segment=slot.segment.name,
        stats_segment=slot.counters.name,
        journal_segment=slot.journal.name,
        journal_writes=slot.journal.writes,
        templates=plan.templates,
        servers=slot.shard.servers,
        heartbeat_interval_s=heartbeat_interval_s,
        origin=origin,
        faults=faults,
        log_level=log_level,
    )


def forget_process(slot: Slot) -> None:
    loop = asyncio.get_running_loop()
    if slot.process is not None:
        loop.remove_reader(slot.process.sentinel)
    if slot.channel is not None:
        slot.channel.close()
    if slot.conn is not None:
        slot.conn.close()
    slot.process, slot.conn, slot.channel = None, None, None
    for future in slot.replies.values():  # nobody will answer them now
        if not future.done():
            future.set_result(None)
    slot.replies.clear()


async def stop_workers(slots: Sequence[Slot], grace_s: float) -> None:
    """Ask every worker to stop at once, kill what is left after `grace_s` (one grace
    period in all, however many workers), and collect them all."""
    for slot in slots:
        _ask_to_stop(slot)
    live = [slot for slot in slots if slot.process is not None]
    waits = [asyncio.create_task(slot.exited.wait()) for slot in live]
    if waits:
        await asyncio.wait(waits, timeout=grace_s)
    for wait in waits:
        wait.cancel()
    for slot in live:
        _kill_if_running(slot)
    for slot in live:
        if slot.process is not None:
            await asyncio.to_thread(slot.process.join, 2.0)
            forget_process(slot)


def _ask_to_stop(slot: Slot) -> None:
    # Queued after whatever is being written (an Assign): frames never interleave.
    if slot.channel is None or slot.process is None or slot.state == SlotState.STOPPED:
        return
    with contextlib.suppress(OSError, PipeFull):
        slot.channel.send(Stop(reason="farm stopping"))


def _kill_if_running(slot: Slot) -> None:
    if not slot.exited.is_set() and slot.pid is not None:
        log.warning(
            "worker %d (pid %d) did not stop in time; killing it",
            slot.shard.worker,
            slot.pid,
            extra=tag("worker_killed", worker=slot.shard.worker, pid=slot.pid),
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(slot.pid, signal.SIGKILL)
