"""The master's end of a running worker's pipe: what each message from the worker changes
in its slot, and requests that await the worker's `Reply`.

Used by farm.master.supervision.supervisor, which reads the pipe (on the master's loop) and hands
each
message here; farm.ipc.messages owns the wire format. What the rest of the master must hear
about (fault confirmations, the workers' log events) the supervisor passes on itself.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterator

from farm.ipc.channel import PipeFull
from farm.ipc.messages import Heartbeat, Message, Ready, Reply, ServerFailed
from farm.master.logs import tag
from farm.master.supervision.slot import Slot, SlotState

log = logging.getLogger("farm")


def record(slot: Slot, message: Message, now: float, stalled_s: float) -> bool:
    """Note in `slot` what `message` says; True when the farm's boot progress moved."""
    if isinstance(message, Heartbeat):
        slot.heartbeat, slot.last_heartbeat = message, now
        slot.servers_up = message.servers_up  # servers stop and start through the API
        slot.stalled_at_heartbeat = stalled_s
        return slot.state is SlotState.STARTING
    if isinstance(message, Ready):
        slot.state, slot.ready_at, slot.last_heartbeat = SlotState.READY, now, now
        slot.stalled_at_heartbeat = stalled_s
        slot.servers_up, slot.boot_failures = message.servers_up, 0
        ready = tag("worker_ready", worker=slot.shard.worker, servers=message.servers_up)
        log.debug("worker %d ready: %d servers", slot.shard.worker, message.servers_up, extra=ready)
        return True
    if isinstance(message, ServerFailed):
        slot.failed[message.server] = message
        failed = tag("server_failed", worker=slot.shard.worker, server=message.server)
        log.warning(
            "server %s (%s) failed: %s",
            message.server,
            message.address,
            message.reason,
            extra=failed,
        )
    elif isinstance(message, Reply):
        future = slot.replies.pop(message.request_id, None)
        if future is not None and not future.done():
            future.set_result(message)
    return False


def ask(
    slot: Slot,
    request_ids: Iterator[int],
    make: Callable[[int], Message],
    socks: list[socket.socket] | tuple[()],
) -> asyncio.Future[Reply | None]:
    """Send the message `make(request_id)` builds (and `socks`, in order) to the slot's
    worker; the future is its Reply, or None when no worker will answer."""
    future: asyncio.Future[Reply | None] = asyncio.get_running_loop().create_future()
    if slot.channel is None or slot.process is None:
        future.set_result(None)
        return future
    request_id = next(request_ids)
    slot.replies[request_id] = future
    try:
        slot.channel.send(make(request_id), list(socks))
    except (OSError, PipeFull):  # the worker is dying; its exit respawns it with the new state
        slot.replies.pop(request_id, None)
        future.set_result(None)
    return future
