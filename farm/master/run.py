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
import errno
import ipaddress
import logging
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from farm.config.plan import Plan
from farm.config.scenario.model import Timeline
from farm.errors import ConfigError, PortBusyError, StateSaveError
from farm.master import logs
from farm.master.faults.table import FaultTable
from farm.master.fleet.inventory import Inventory
from farm.master.fleet.scale import Scaler
from farm.master.fleet.switch import Switch
from farm.master.fleetview.stream import STALL_S
from farm.master.http.access import Hosts
from farm.master.http.app import build_app, build_metrics_app
from farm.master.observe.tallies import ClientTallies
from farm.master.scenario.player import ScenarioPlayer
from farm.master.scenario.steps import StepActions
from farm.master.state.marker import last_failure, stale
from farm.master.state.restore import restore
from farm.master.state.saver import StateKeeper, StateSaver, state_size
from farm.master.state.statefile import Snapshot, fleet_counts, load
from farm.master.supervision.listeners import bind_all, capacity, describe, ephemeral_overlap
from farm.master.supervision.supervisor import Supervisor, SupervisorOptions

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True, slots=True, kw_only=True)
class MasterOptions:
    api_host: str = "127.0.0.1"
    api_port: int = 9502
    api_token: str | None = field(default=None, repr=False)  # never in a log line
    api_insecure: bool = False  # serve a non-loopback API without a token, knowingly
    api_allow_hosts: tuple[str, ...] = ()  # Host names the API answers to (http.access)
    metrics_host: str | None = None  # None: the API's host
    metrics_port: int | None = None  # a separate /metrics listener; None: none
    state_file: Path | None = None  # banks restored from it at start, saved to it
    # The digest of the plan the config built, before the state file resized it
    # (farm.master.state.restore.sized_plan); None: the plan served is the config's.
    state_origin: str | None = None
    state_interval_s: float = 10.0
    view_stall_s: float = STALL_S  # a fleet view stream not drained this long is closed
    supervisor: SupervisorOptions = field(default_factory=SupervisorOptions)
    scenario: Timeline | None = None  # played from when every server is ready


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


async def _start_api(
    app: web.Application, host: str, port: int, option: str = "--api-port"
) -> web.AppRunner:
    # A client still connected must not hold the stop up for aiohttp's default 60 s.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        hint = ""
        if exc.errno == errno.EADDRINUSE and option == "--api-port":
            hint = (
                f" (a farm already running there? `farm status --api-port {port}` shows it, "
                f"`farm down --api-port {port}` stops it)"
            )
        raise PortBusyError(
            f"control API cannot listen on {host}:{port}: {exc.strerror or exc}; "
            f"pick another {option}{hint}"
        ) from exc
    return runner


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
        refresh: tuple[Callable[[], object], ...] = ()  # what a scale tells, besides the API's
        keeper: StateKeeper | None = None
        hosts = Hosts.of(
            options.api_allow_hosts, bool(options.api_token), loopback_host(options.api_host)
        )
        if options.state_file is not None:
            keeper = _keep_state(options, snapshot, supervisor)
            cleanup.push_async_callback(keeper.finish)  # last in, first out: after the stop
            refresh = (keeper.save_soon,)  # a scaled farm is saved at once, not at the interval
        cleanup.push_async_callback(supervisor.stop)
        supervisor.on_progress = on_progress
        supervisor.on_fatal = stop_requested.set
        inventory, switch = Inventory(supervisor), Switch(supervisor)
        faults = FaultTable(supervisor, switch)
        cleanup.push_async_callback(faults.close)
        inventory.faults = faults.faults_of
        inventory.overlay = faults.overlay
        scaler = Scaler(supervisor, (inventory.refresh, switch.refresh, faults.refresh, *refresh))
        actions = StepActions(faults, switch, inventory, scaler.scale, scaler.counts)
        player = ScenarioPlayer(actions, plan.fleets, plan.templates)
        cleanup.push_async_callback(player.close)  # before the faults (callbacks run last first)
        tallies = ClientTallies(supervisor)  # per client, for /metrics
        tallies.start()
        cleanup.push_async_callback(tallies.stop)
        app = build_app(
            supervisor,
            stop_requested.set,
            options.api_token,
            _metrics_urls(options),
            inventory=inventory,
            switch=switch,
            faults=faults,
            scenario=player,
            scaler=scaler,
            hosts=hosts,
            view_stall_s=options.view_stall_s,
            state=keeper.summary if keeper is not None else lambda: None,
            clients=tallies,
        )
        cleanup.push_async_callback(
            (await _start_api(app, options.api_host, options.api_port)).cleanup
        )
        if options.metrics_port is not None:
            metrics_app = build_metrics_app(supervisor, faults, player, hosts, tallies)
            metrics_host = options.metrics_host or options.api_host
            metrics_runner = await _start_api(
                metrics_app, metrics_host, options.metrics_port, "--metrics-port"
            )
            cleanup.push_async_callback(metrics_runner.cleanup)
        starting = asyncio.create_task(supervisor.start())
        stopping = asyncio.create_task(stop_requested.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # raises BootError
            if on_ready is not None:
                on_ready(_summary(plan, supervisor, options, time.monotonic() - began))
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


def _metrics_urls(options: MasterOptions) -> tuple[str, ...]:
    """Where /metrics is served, the separate listener first."""
    urls = [f"http://{_url_host(options.api_host)}:{options.api_port}/metrics"]
    if options.metrics_port is not None:
        host = _url_host(options.metrics_host or options.api_host)
        urls.insert(0, f"http://{host}:{options.metrics_port}/metrics")
    return tuple(urls)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


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
        metrics_url=_metrics_urls(options)[0],
        seconds=seconds,
        failed=failed,
    )
