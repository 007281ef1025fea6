"""One open page's stream of the fleet view: its queue of server-sent events.

Part of the fleet view (farm.master.fleetview.view produces the events, once for every page;
farm.master.fleetview.pages writes each page's queue to its HTTP response). A page that falls
`MAX_BACKLOG` events behind is dropped rather than sent stale events: its EventSource
reconnects and starts again from a layout and a snapshot.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

MAX_BACKLOG = 16


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
