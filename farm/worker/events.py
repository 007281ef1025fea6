"""A worker's side of the farm's one log: events go to the master over the pipe.

Sits beside the engine in a worker (... worker -> engine, limits -> events -> pipe -> master's
log, farm.master.logs). A worker prints nothing itself: every line of the farm's log is
written by the master, so there is one log, in one format, in one place.

Events are queued and sent as one `Events` message when the loop iteration that produced
them ends (`call_soon`), so a crash loses at most what the last few milliseconds said.

A noisy peer must not flood the log: `throttled` events (malformed frames, timeouts, a
connection limit hit) give one line per server and kind at once, then count in silence for
`window_s`, and at the end of the window say in one line how many more there were.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from farm.ipc.messages import Event, Events, Message

Fields = dict[str, str | int | float]


@dataclass(slots=True)
class _Window:
    ends: float  # monotonic
    suppressed: int = 0
    message: str = ""
    level: int = logging.WARNING
    fields: Fields | None = None


class EventLog:
    """Queues a worker's events and sends them to the master in batches."""

    def __init__(
        self,
        worker: int,
        send: Callable[[Message], None],
        level: int = logging.INFO,
        window_s: float = 10.0,
    ) -> None:
        self.worker = worker
        self.send = send
        self.level = level
        self.debug = level <= logging.DEBUG
        self.window_s = window_s
        self._queue: list[Event] = []
        self._windows: dict[tuple[str, str], _Window] = {}
        self._roll_handle: asyncio.TimerHandle | None = None

    def emit(
        self, level: int, event: str, message: str, server: str = "", **fields: str | int | float
    ) -> None:
        if level < self.level:
            return
        first = not self._queue
        self._queue.append(
            Event(
                time=time.time(),
                level=level,
                event=event,
                server=server,
                message=message,
                fields=fields,
            )
        )
        if first:
            loop = _running_loop()
            if loop is None:
                self.flush()  # outside a loop (an engine driven by hand): at once
            else:
                loop.call_soon(self.flush)

    def throttled(
        self, level: int, event: str, message: str, server: str, **fields: str | int | float
    ) -> None:
        """Like `emit`, but at most one line per (server, event) per window, then a count."""
        key = (server, event)
        window = self._windows.get(key)
        now = time.monotonic()
        if window is None or now >= window.ends:
            if window is not None:
                self._summarize(key, window)
            self._windows[key] = _Window(ends=now + self.window_s)
            self.emit(level, event, message, server, **fields)
            self._roll_later()
            return
        window.suppressed += 1
        window.message, window.level, window.fields = message, level, fields

    def flush(self) -> None:
        if self._queue:
            queued, self._queue = self._queue, []
            self.send(Events(worker=self.worker, events=tuple(queued)))

    def close(self) -> None:
        """Say what the open windows counted, and send everything (the worker is stopping)."""
        for key, window in list(self._windows.items()):
            self._summarize(key, window)
        self._windows.clear()
        if self._roll_handle is not None:
            self._roll_handle.cancel()
        self.flush()

    def _roll_later(self) -> None:
        loop = _running_loop()
        if self._roll_handle is None and loop is not None:
            self._roll_handle = loop.call_later(self.window_s, self._roll)

    def _roll(self) -> None:
        """End the windows that are over; one timer for the whole worker, not one per key."""
        self._roll_handle = None
        now = time.monotonic()
        for key, window in list(self._windows.items()):
            if now >= window.ends:
                self._summarize(key, window)
                del self._windows[key]
        if self._windows:
            self._roll_later()

    def _summarize(self, key: tuple[str, str], window: _Window) -> None:
        if not window.suppressed:
            return
        server, event = key
        fields = dict(window.fields or {})
        fields["repeated"] = window.suppressed
        self.emit(
            window.level,
            event,
            f"{window.suppressed} more like this in the last {self.window_s:g} s "
            f"(the last: {window.message})",
            server,
            **fields,
        )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
