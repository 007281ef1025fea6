"""The load generator's processes: one spawned process per share of `farm bench --processes P`.

Not part of the farm's data flow (see farm.bench.command). The parent spawns each share with a
duplex pipe, waits until every child has opened its connections (`ready`), then says `go`
to all at once, so the shares load the target over the same window. Children send a
`progress` snapshot four times a second and one `result` at the end; each is a pickled
tuple `(kind, payload)`. A child whose parent disappears stops at its own deadline anyway
(every run is bounded), and the parent kills by PID any child that outlives the run's
bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from typing import Any, Protocol

import multiprocess
import uvloop
from multiprocess.connection import wait

from farm.bench.loadgen import LoadResult, LoadSpec, Snapshot, run_load
from farm.errors import FarmError
from farm.openfiles import raise_open_files_limit

SPAWN_TIMEOUT_S = 30.0  # for a child to import, connect and say ready
CONNECT_S = 0.005  # more of it per connection to open, on a machine shared with the farm
GO_TIMEOUT_S = 60.0


class Pipe(Protocol):
    """The parts of a `multiprocess` pipe end used here (between this program's processes)."""

    def send(self, obj: object) -> None: ...
    def recv(self) -> Any: ...
    def poll(self, timeout: float | None = 0.0) -> bool: ...
    def close(self) -> None: ...


def child(conn: Pipe, spec: LoadSpec) -> None:
    """Entry point of a spawned generator process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    raise_open_files_limit()

    async def wait_for_go(connected: int) -> None:
        conn.send(("ready", connected))
        ready = await asyncio.to_thread(conn.poll, GO_TIMEOUT_S)
        if not ready or conn.recv() != ("go", None):
            raise SystemExit(1)

    def progress(snapshot: Snapshot) -> None:
        conn.send(("progress", snapshot))

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(run_load(spec, progress, wait_for_go))
    conn.send(("result", result))
    conn.close()


def run_processes(
    specs: list[LoadSpec], on_progress: Callable[[Snapshot], None] | None = None
) -> list[LoadResult]:
    """Run one share per spawned process; returns their results in order."""
    context = multiprocess.get_context("spawn")
    processes, conns = [], []
    for share, spec in enumerate(specs):
        ours, theirs = context.Pipe(duplex=True)
        process = context.Process(
            target=child, args=(theirs, spec), name=f"farm-bench-{share}", daemon=True
        )
        process.start()
        theirs.close()
        processes.append(process)
        conns.append(ours)
    # Opening connections takes time in proportion to their number (10,000 a process is
    # seconds of CPU, more on a busy machine): the bound grows with it.
    bound = SPAWN_TIMEOUT_S + max(
        s.duration_s + 2 * s.timeout_s + s.connect_timeout_s + CONNECT_S * len(s.targets)
        for s in specs
    )
    try:
        return _conduct(conns, on_progress, time.monotonic() + bound)
    finally:
        for process in processes:
            process.join(timeout=2.0)
            if process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.join(timeout=2.0)
        for conn in conns:
            conn.close()


def _conduct(
    conns: list[Pipe], on_progress: Callable[[Snapshot], None] | None, deadline: float
) -> list[LoadResult]:
    ready: set[int] = set()
    latest: dict[int, Snapshot] = {}
    results: dict[int, LoadResult] = {}
    index = {id(conn): i for i, conn in enumerate(conns)}
    while len(results) < len(conns):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FarmError(
                f"{len(conns) - len(results)} generator process(es) overran their bound"
            )
        for conn in wait([c for c in conns if index[id(c)] not in results], remaining):
            share = index[id(conn)]
            try:
                kind, payload = conn.recv()
            except EOFError:
                raise FarmError(f"generator process {share} died") from None
            if kind == "ready":
                ready.add(share)
                if len(ready) == len(conns):
                    for other in conns:
                        other.send(("go", None))
            elif kind == "progress":
                latest[share] = payload
                if on_progress is not None and len(latest) == len(conns):
                    on_progress(_total(list(latest.values())))
            elif kind == "result":
                results[share] = payload
    return [results[i] for i in range(len(conns))]


def _total(snapshots: list[Snapshot]) -> Snapshot:
    return Snapshot(
        sent=sum(s.sent for s in snapshots),
        responses=sum(s.responses for s in snapshots),
        exceptions=sum(s.exceptions for s in snapshots),
        timeouts=sum(s.timeouts for s in snapshots),
        errors=sum(s.errors for s in snapshots),
        elapsed_s=max(s.elapsed_s for s in snapshots),
    )
