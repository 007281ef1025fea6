"""The master process: binds the farm's addresses, runs the supervisor and the API, and
owns the signals.

Ties the flow together for `farm up` (plan -> listeners -> supervisor -> api). The only
module that touches signals: SIGINT (Ctrl-C), SIGTERM (a service manager, `docker stop`)
and SIGHUP (the terminal was closed) ask for a graceful stop (stop accepting, finish,
close, exit 0). They are caught with `loop.add_signal_handler`, which installs a real
handler: as PID 1 of a container, where the kernel drops every signal that has no handler
(SIGTERM's default action included), the farm still stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import logging
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from farm import collector
from farm.config.plan import Plan
from farm.errors import ConfigError, StateSaveError
from farm.master import logs
from farm.master.options import MasterOptions
from farm.master.state.marker import last_failure, stale
from farm.master.state.restore import restore
from farm.master.state.statefile import Snapshot, fleet_counts, load
from farm.master.supervision.listeners import bind_all, capacity, describe, ephemeral_overlap
from farm.master.supervision.supervisor import Supervisor

if TYPE_CHECKING:
    from farm.master.state.saver import StateKeeper

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadySummary:
    servers: int
    servers_ready: int
    addresses: tuple[str, ...]  # one line per fleet: name, transport, address ranges
    workers: int
    pids: tuple[int, ...]
    api_url: str
    metrics_url: str
    seconds: float
    failed: tuple[str, ...]


async def serve(
    plan: Plan,
    options: MasterOptions,
    on_progress: Callable[[int, int], None] | None = None,
    on_ready: Callable[[ReadySummary], None] | None = None,
) -> None:
    """Run the farm until a stop signal or `POST /api/v1/shutdown`; raises FarmError."""
    began = time.monotonic()
    check_api_exposure(options)
    # A state file that cannot be used stops the start before anything is bound.
    snapshot = load(options.state_file, plan) if options.state_file else None
    stop_requested = asyncio.Event()
    # Undone in reverse order, whatever happens: the API stops, the workers stop and the
    # sockets and shared memory go, and only then the signal handlers (a second Ctrl-C
    # during the stop must not kill the master halfway through).
    async with contextlib.AsyncExitStack() as cleanup:
        # First of all: a signal while the sockets are being bound must still stop the farm
        # cleanly (the handler only sets an event; the start below then gives way to the stop).
        cleanup.enter_context(_stop_signals(stop_requested.set))
        sockets = bind_all(plan.servers())
        cleanup.callback(_close, sockets)  # in case the supervisor never takes them over
        logs.event(logging.INFO, "capacity", capacity(plan))
        overlap = ephemeral_overlap(plan)
        if overlap is not None:
            logs.event(logging.WARNING, "ephemeral_ports", overlap)
        supervisor = Supervisor(plan, sockets, options.supervisor)
        keeper: StateKeeper | None = None
        if options.state_file is not None:
            keeper = _keep_state(options, snapshot, supervisor)
            cleanup.push_async_callback(keeper.finish)  # last in, first out: after the stop
        cleanup.push_async_callback(supervisor.stop)
        supervisor.on_progress = on_progress
        supervisor.on_fatal = stop_requested.set
        # The workers start first: their boot (mostly loading their modules) overlaps the
        # loading of the API's first part here, in a thread, so that the loop keeps reading
        # the workers' pipes and the signals meanwhile. The faults of their Assign are none
        # yet: the fault table that could hold some comes with the API's rest.
        starting = asyncio.create_task(supervisor.start())
        cleanup.push_async_callback(_cancel, starting)  # an API that cannot start, say
        # (`farm up` loaded it already, farm.cli._start_early: then this finds it there.)
        await asyncio.to_thread(importlib.import_module, "farm.master.api")
        from farm.master.api import open_api  # loaded just above: nothing left to load

        rest = await open_api(
            supervisor,
            options,
            stop_requested.set,
            keeper,
            cleanup,
            loopback_host(options.api_host),
        )
        stopping = asyncio.create_task(stop_requested.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # raises BootError
            if on_ready is not None:
                on_ready(_summary(plan, supervisor, options, time.monotonic() - began))
            collector.resume()  # paused by `farm up` (farm.cli) for the start
            # The API's rest loads now that every server is up (unless a request for it
            # came first), rather than taking CPU from the workers' boot.
            loading = rest()
            await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if loading.done():
                player = loading.result().player  # raises what failed to load
                if options.scenario is not None:
                    player.begin(options.scenario)
            await stopping
        else:
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        if supervisor.fatal is not None:
            raise supervisor.fatal
    if keeper is not None and keeper.failures:
        raise StateSaveError(
            f"{keeper.failures} saves of the state file {options.state_file} failed (the last: "
            f"{keeper.last_error}); it holds the farm as of its last good save, and the next "
            "start will say so"
        )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@contextlib.contextmanager
def _stop_signals(stop: Callable[[], None]) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop)
    try:
        yield
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


def check_api_exposure(options: MasterOptions) -> None:
    """Refuse an API that anyone on the network could drive: non-loopback and no token."""
    if options.api_token or options.api_insecure or loopback_host(options.api_host):
        return
    raise ConfigError(
        f"the control API would listen on {options.api_host} without a token, so anyone who "
        "reaches it could change values and stop the farm; set one with --api-token TOKEN "
        "(or FARM_API_TOKEN), or pass --api-insecure to accept the risk"
    )


def loopback_host(host: str) -> bool:
    """Whether `host` (an address, or "localhost") is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def _keep_state(
    options: MasterOptions, snapshot: Snapshot | None, supervisor: Supervisor
) -> StateKeeper:
    """Restore the banks from the state file (before any worker starts), then keep saving
    the farm as it runs (as `farm scale` changes it: the supervisor's plan)."""
    from farm.master.state.saver import StateKeeper, StateSaver, state_size  # numpy: here

    supervisor.initialize()  # the starting values first: the file's values go over them
    path, plan = options.state_file, supervisor.plan
    assert path is not None
    segments = {slot.shard.worker: slot.segment.name for slot in supervisor.slots}
    if snapshot is None:
        logs.event(
            logging.INFO,
            "state_new",
            f"state file {path} does not exist yet: starting from the templates' values",
            file=str(path),
        )
    else:
        failure = last_failure(path)
        if stale(snapshot.saved_at, failure):
            assert failure is not None
            logs.event(
                logging.WARNING,
                "state_stale",
                f"state file {path} was saved at {snapshot.saved_at}, but the farm that used it "
                f"failed to save it at {failure.failed_at} ({failure.reason}): what changed "
                "in between is lost",
                file=str(path),
                saved_at=snapshot.saved_at,
                failed_at=failure.failed_at,
            )
        written = restore(snapshot, plan, segments)
        counts = fleet_counts(plan)
        fleets = ", ".join(f"{name} {count}" for name, count in counts.items())
        logs.event(
            logging.INFO,
            "state_restored",
            f"state restored from {path} (saved {snapshot.saved_at}): "
            f"{state_size(len(snapshot.records), written, snapshot.file_bytes)}"
            + (f"; fleets: {fleets}" if fleets else ""),
            file=str(path),
            records=len(snapshot.records),
            data_bytes=written,
            file_bytes=snapshot.file_bytes,
            saved_at=snapshot.saved_at,
            fleets=counts,
        )
    saver = StateSaver(path, lambda: supervisor.plan, segments, options.state_origin)
    keeper = StateKeeper(saver, options.state_interval_s)
    keeper.start()
    return keeper


def _close(sockets: dict[int, socket.socket]) -> None:
    for sock in sockets.values():
        sock.close()


def _fleet_addresses(plan: Plan) -> tuple[str, ...]:
    """Each fleet on its own line, with its transport: a UDP fleet's ports are not the TCP
    fleet's range."""
    fleets: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for spec in plan.servers():
        fleets.setdefault((spec.fleet, spec.transport), []).append((spec.host, spec.port))
    return tuple(
        f"{fleet} {transport} {describe(addresses)}"
        for (fleet, transport), addresses in fleets.items()
    )


def _summary(
    plan: Plan, supervisor: Supervisor, options: MasterOptions, seconds: float
) -> ReadySummary:
    base = f"http://{options.api_host}:{options.api_port}"
    failed = tuple(
        f"{failure.server} ({failure.address}): {failure.reason}"
        for slot in supervisor.slots
        for failure in slot.failed.values()
    )
    return ReadySummary(
        servers=plan.servers_total,
        servers_ready=supervisor.servers_ready(),
        addresses=_fleet_addresses(plan),
        workers=len(supervisor.slots),
        pids=tuple(slot.pid for slot in supervisor.slots if slot.pid is not None),
        api_url=f"{base}/api/v1/status",
        metrics_url=options.metrics_urls()[0],
        seconds=seconds,
        failed=failed,
    )
