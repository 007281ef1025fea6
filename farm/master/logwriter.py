"""The log's lines written by a thread of their own, so the master's loop never waits on them.

A `farm up` whose stderr is a pipe nobody reads (a test harness, `farm up 2>&1 | less` left
paused, a supervisor that stopped draining) fills the pipe's 64 KiB and then every write
blocks. Written from the event loop, that froze the API, the heartbeats and every worker's
supervision after a few hundred lines. The loop only puts a record on a bounded queue; this
thread formats and writes it. When the queue is full (the reader stalled for 10,000 lines)
further lines are dropped and counted, and the count is written as one line of its own as
soon as the writer catches up: nothing blocks, and the log says what it lost.
"""

from __future__ import annotations

import logging
import queue
import threading

CAPACITY = 10_000  # lines waiting for a slow reader before lines are dropped (and counted)
DRAIN_S = 10.0  # how long the end of `farm up` waits for a stalled reader to take the rest


class QueuedHandler(logging.Handler):
    """Hands each record to the writer thread; never blocks the caller."""

    def __init__(self, target: logging.Handler, capacity: int = CAPACITY) -> None:
        super().__init__()
        self.target = target
        self.lines: queue.Queue[logging.LogRecord | None] = queue.Queue(capacity)
        self.dropped = 0  # counted on the caller's side, reported by the writer
        self.reported = 0
        self.thread = threading.Thread(target=self._write, name="farm-log", daemon=True)
        self.thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        if record.args:  # the arguments as they are now, not when the thread gets to them
            record.msg, record.args = record.getMessage(), None
        try:
            self.lines.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def _write(self) -> None:
        while (record := self.lines.get()) is not None:
            dropped = self.dropped
            if dropped > self.reported:
                self.target.handle(_dropped_line(dropped - self.reported))
                self.reported = dropped
            self.target.handle(record)
        if self.dropped > self.reported:
            self.target.handle(_dropped_line(self.dropped - self.reported))

    def drain(self, timeout: float = DRAIN_S) -> bool:
        """Write what is queued and stop the thread; False if the reader stayed stalled."""
        if not self.thread.is_alive():
            return True
        try:
            self.lines.put(None, timeout=timeout)
        except queue.Full:
            return False
        self.thread.join(timeout)
        self.target.flush()
        return not self.thread.is_alive()


def _dropped_line(count: int) -> logging.LogRecord:
    record = logging.LogRecord(
        "farm",
        logging.WARNING,
        "(log)",
        0,
        "%d log lines dropped: nothing read the log as fast as the farm wrote it",
        (count,),
        None,
    )
    record.event = "log_lines_dropped"
    record.fields = {"lines": count}
    return record
