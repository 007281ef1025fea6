"""Worker health: the deadlines a worker must meet, and what follows its death.

Used by farm.master.supervision.supervisor: its watchdog task (`watch`) asks `overdue` of every slot
and has a worker that missed its boot deadline, or whose heartbeats stopped (its loop is
stuck, or it was SIGSTOPped), killed with `replace`; its exit path asks `after_death`
whether a dead worker's slot gets a new one, after which backoff, or whether the farm
must stop.

Heartbeat ages are measured on the master's loop, so time the master itself was stalled
(a long callback, a SIGSTOP, a laptop lid) is not charged to the workers: the watchdog
measures how late its own sleeps wake up, adds that to `stalled_s`, and a worker's silence
is the time since its last heartbeat minus the master's stalls since then. Without that, a
master resumed after a stall would kill every healthy worker whose heartbeats were still
waiting, unread, in its pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from farm.ipc.spawn import EXIT_BOOT_FAILED, EXIT_PIPE_ERROR
from farm.master.logs import tag
from farm.master.supervision.slot import Slot, SlotState

if TYPE_CHECKING:
    from farm.master.supervision.supervisor import Supervisor, SupervisorOptions

log = logging.getLogger("farm")


@dataclass(frozen=True, slots=True)
class Restart:
    """What follows a worker's death: a new worker after `delay_s`, or none (`failure`
    says why the farm must stop)."""

    delay_s: float = 0.0
    failure: str | None = None


async def watch(supervisor: Supervisor) -> None:
    """Kill workers that miss their boot deadline or go silent; the exit path restarts."""
    interval = min(supervisor.options.heartbeat_interval_s, 0.5)
    while True:
        before = time.monotonic()
        await asyncio.sleep(interval)
        now = time.monotonic()
        # However late this wake-up is, the master was not listening meanwhile.
        supervisor.stalled_s += max(0.0, now - before - interval)
        for slot in supervisor.slots:
            pid = slot.pid
            if pid is None or supervisor.stopping:
                continue
            reason = overdue(slot, now, supervisor.stalled_s, supervisor.options)
            if reason is not None:
                replace(slot, pid, reason)


def overdue(slot: Slot, now: float, stalled_s: float, options: SupervisorOptions) -> str | None:
    """Why `slot`'s worker must be replaced now, if it must; master stalls not counted."""
    if slot.state is SlotState.STARTING:
        booting = now - slot.spawned_at - (stalled_s - slot.stalled_at_spawn)
        if booting > options.boot_timeout_s:
            return f"not ready after {options.boot_timeout_s:.0f} s"
    elif slot.state is SlotState.READY:
        silent = now - slot.last_heartbeat - (stalled_s - slot.stalled_at_heartbeat)
        if silent > options.heartbeat_timeout_s:
            return f"no heartbeat for {silent:.1f} s"
    return None


def replace(slot: Slot, pid: int, reason: str) -> None:
    """Kill an unresponsive worker; its exit, seen by the supervisor, brings a new one."""
    slot.last_failure, slot.replaced_pid = reason, pid
    log.warning(
        "worker %d (pid %d): %s; replacing it",
        slot.shard.worker,
        pid,
        reason,
        extra=tag("worker_unresponsive", worker=slot.shard.worker, pid=pid),
    )
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def death_cause(code: int | None) -> str:
    """A worker's exit code as a log line says it."""
    if code == EXIT_PIPE_ERROR:
        return f"exit code {code}: the master's pipe was garbled (its log line says how)"
    return f"exit code {code}" if code is not None and code >= 0 else f"signal {-(code or 0)}"


def after_death(
    slot: Slot, pid: int | None, code: int | None, booted: bool, options: SupervisorOptions
) -> Restart:
    """Count a worker's death (the farm is not stopping) against its slot, and say what
    follows: backoff grows with crashes in a row; boot failures in a row stop the farm."""
    cause = death_cause(code)
    if slot.replaced_pid != pid:  # not killed by the watchdog: its death is the cause
        slot.last_failure = f"died ({cause})"
    if code == EXIT_BOOT_FAILED:
        return Restart(failure=f"worker {slot.shard.worker} could not boot ({cause})")
    slot.state = SlotState.RESTARTING
    slot.restarts += 1
    log.warning(
        "worker %d (pid %s) died (%s); restarting it",
        slot.shard.worker,
        pid,
        cause,
        extra=tag("worker_restart", worker=slot.shard.worker, pid=pid, exit_code=code),
    )
    if not booted:
        slot.boot_failures += 1
        if slot.boot_failures >= options.max_boot_failures:
            return Restart(
                failure=f"worker {slot.shard.worker} failed to boot {slot.boot_failures} times "
                f"in a row (last: {cause})"
            )
    stable = booted and time.monotonic() - slot.ready_at > options.stable_after_s
    slot.crashes_in_a_row = 0 if stable else slot.crashes_in_a_row + 1
    backoff = options.backoff_s
    return Restart(delay_s=backoff[min(max(slot.crashes_in_a_row - 1, 0), len(backoff) - 1)])
