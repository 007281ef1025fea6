"""The farm's one log: the master's own lines and every worker's events, in one place.

Sits at the end of the pipe (worker events -> pipe -> supervisor -> logs). Workers print
nothing; they send `Events` (farm.worker.events) and the master writes them here, next to its
own lines, through the `farm` logger. Every line has: time, level, worker (or none: the
master), server (or none), event (snake_case: worker_started, idle_timeout,
malformed_frame, state_saved, ...), a message, and fields.

    --log-format text   one line a person reads: time, level, `worker N`, server, message
                        (on a terminal, with Rich's colours)
    --log-format json   one JSON object a line, keys: time (ISO 8601, UTC), level, worker,
                        server, event, message, fields
    --log-file FILE     lines go to FILE (appended) instead of stderr

Lines are written by a thread of their own (farm.master.logwriter): a reader that stops
reading stderr never stalls the farm; `drain` at the end writes what is left.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from rich.console import Console
from rich.logging import RichHandler

from farm.ipc.messages import Events
from farm.master.logwriter import QueuedHandler

LOGGER = "farm"
LogFormat = Literal["text", "json"]
log = logging.getLogger(LOGGER)


def tag(name: str, *, worker: int | None = None, server: str = "", **fields: Any) -> dict[str, Any]:
    """The `extra` of a line of the master's own: its event name, worker, server and fields."""
    return {"event": name, "worker": worker, "server": server, "fields": fields}


def event(
    level: int,
    name: str,
    message: str,
    *,
    worker: int | None = None,
    server: str = "",
    **fields: Any,
) -> None:
    """A line of the master's own, with its event name and fields."""
    log.log(level, message, extra=tag(name, worker=worker, server=server, **fields))


def worker_events(message: Events) -> None:
    """Write what a worker sent, with the time it happened (not the time it arrived)."""
    for item in message.events:
        if not log.isEnabledFor(item.level):
            continue
        record = log.makeRecord(
            LOGGER,
            item.level,
            "(worker)",
            0,
            item.message,
            (),
            None,
            extra={
                "event": item.event,
                "worker": message.worker,
                "server": item.server,
                "fields": item.fields,
                "from_worker": True,
            },
        )
        record.created = item.time
        record.msecs = (item.time % 1) * 1000
        log.handle(record)


def _prefix(record: logging.LogRecord) -> str:
    """`worker 0: device-0003: ` for a worker's line (the master's name what they concern)."""
    if not getattr(record, "from_worker", False):
        return ""
    server = getattr(record, "server", "")
    return f"worker {getattr(record, 'worker', '?')}: " + (f"{server}: " if server else "")


class TextFormatter(logging.Formatter):
    """`2026-01-02 10:11:12.345 WARNING worker 0: device-0003: closed the connection ...`"""

    def __init__(self, with_time: bool = True) -> None:
        super().__init__()
        self.with_time = with_time

    def format(self, record: logging.LogRecord) -> str:
        text = _prefix(record) + record.getMessage()
        if not self.with_time:
            return text
        stamp = datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S")
        return f"{stamp}.{int(record.msecs):03d} {record.levelname:<7} {text}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        fields = getattr(record, "fields", None) or {}
        line = {
            "time": stamp.replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "worker": getattr(record, "worker", None),
            "server": getattr(record, "server", "") or None,
            "event": getattr(record, "event", None) or "log",
            "message": record.getMessage(),
            "fields": {key: _plain(value) for key, value in fields.items()},
        }
        return json.dumps(line, ensure_ascii=False)


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


def configure(
    level: str = "info",
    fmt: LogFormat = "text",
    file: str | None = None,
    console: Console | None = None,
) -> None:
    """Set up the `farm` logger (and the root logger's level) for `farm up`."""
    handler: logging.Handler
    console = console or Console(stderr=True)
    if file is not None:
        handler = logging.FileHandler(file, encoding="utf-8")
        handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    elif fmt == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    elif not console.is_terminal:
        # A pipe or a file: one record, one line, as --log-file writes it (Rich would wrap
        # a long line at 80 columns and split it in two for whatever reads it).
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(TextFormatter())
    else:
        handler = RichHandler(
            console=console,
            show_path=False,
            markup=False,
            rich_tracebacks=False,
        )
        handler.setFormatter(TextFormatter(with_time=False))
    logging.basicConfig(level=level.upper(), handlers=[QueuedHandler(handler)], force=True)


def drain() -> bool:
    """Write every queued line (at the end of `farm up`); False if the reader stayed stalled."""
    drained = True
    for handler in logging.getLogger().handlers:
        if isinstance(handler, QueuedHandler):
            drained = handler.drain() and drained
    return drained
