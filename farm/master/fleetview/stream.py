"""One open page's stream of the fleet view: its queue of server-sent events.

Part of the fleet view (farm.master.fleetview.view produces the events, once for every page;
farm.master.fleetview.pages writes each page's queue to its HTTP response). A page that falls
`MAX_BACKLOG` events behind is dropped rather than sent stale events: its EventSource
reconnects and starts again from a layout and a snapshot.

Open streams are bounded: at most `MAX_SUBSCRIBERS` at once (the next one is answered 503),
and a stream whose bytes have not drained for `STALL_S` seconds (a client that connected and
never reads: its socket's buffers fill and stay full) is closed, so its descriptor goes
back to the master; `farm up --view-stall-timeout` sets another time. "Not drained" counts
what the kernel still holds for the socket (SIOCOUTQ) as well as the transport's own
buffer: a client that stopped reading fills the kernel's buffers long before the
transport's.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import socket
import struct
import termios
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

MAX_BACKLOG = 16
MAX_SUBSCRIBERS = 64
STALL_S = 30.0


class TooManySubscribers(Exception):
    """MAX_SUBSCRIBERS streams are open already."""


@dataclass(eq=False)
class Subscription:
    """One open page's queue of events."""

    pending: deque[bytes] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def push(self, event: bytes) -> None:
        if len(self.pending) >= MAX_BACKLOG:
            self.close()  # too slow: better a fresh start from a snapshot than a stale page
            return
        self.pending.append(event)
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.pending.clear()
        self.wake.set()

    async def next(self) -> bytes | None:
        """The next event, or None once the subscription is closed."""
        while not self.pending:
            if self.closed:
                return None
            self.wake.clear()
            await self.wake.wait()
        return None if self.closed else self.pending.popleft()


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def pump(
    subscription: Subscription,
    write: Callable[[bytes], Awaitable[None]],
    unsent: Callable[[], int],
    stall_s: float = STALL_S,
) -> bool:
    """Write the subscription's events until it closes (True), or until what was written
    has not drained for `stall_s` seconds (False: the caller drops the connection)."""
    stuck_since: float | None = None
    while (event := await subscription.next()) is not None:
        if unsent() == 0:
            stuck_since = None
        elif stuck_since is None:
            stuck_since = time.monotonic()
        elif time.monotonic() - stuck_since > stall_s:
            return False
        try:  # a write waits while the transport's buffer is over its high-water mark
            await asyncio.wait_for(write(event), stall_s)
        except TimeoutError:
            return False
    return True


def unsent_bytes(transport: asyncio.Transport | None) -> int:
    """Bytes written to `transport` that its peer has not taken yet: the transport's buffer
    and the socket's send queue in the kernel (SIOCOUTQ: sent but unacknowledged, or not
    sent as the peer's window is shut)."""
    if transport is None or transport.is_closing():
        return 0
    queued = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if sock is None:
        return queued
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return queued
    return queued + int(struct.unpack("i", raw)[0])


def drop(transport: asyncio.Transport) -> None:
    """Close a stalled stream's connection with a reset: its unsent bytes are discarded
    rather than kept by the kernel for a peer that does not read."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
