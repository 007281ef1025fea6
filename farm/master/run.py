"""The master process: binds the farm's addresses, runs the supervisor and the API, and
owns the signals.

Ties the flow together for `farm up` (plan -> listeners -> supervisor -> api). The only
module that touches signals: SIGINT and SIGTERM, through `loop.add_signal_handler`, ask
for a graceful stop (stop accepting, finish, close, exit 0).
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from farm.config.plan import Plan
from farm.errors import ConfigError, PortBusyError
from farm.master.api import build_app, build_metrics_app
from farm.master.faults import FaultTable
from farm.master.inventory import Inventory
from farm.master.listeners import bind_all, describe
from farm.master.supervisor import Supervisor, SupervisorOptions
from farm.master.switch import Switch


@dataclass(frozen=True, slots=True, kw_only=True)
class MasterOptions:
    api_host: str = "127.0.0.1"
    api_port: int = 9502
    api_token: str | None = None
    api_insecure: bool = False  # serve a non-loopback API without a token, knowingly
    metrics_host: str | None = None  # None: the API's host
    metrics_port: int | None = None  # a separate /metrics listener; None: none
    supervisor: SupervisorOptions = field(default_factory=SupervisorOptions)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadySummary:
    servers: int
    servers_ready: int
    addresses: str
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
        raise PortBusyError(
            f"control API cannot listen on {host}:{port}: {exc.strerror or exc}; "
            f"pick another {option}"
        ) from exc
    return runner


async def serve(
    plan: Plan,
    options: MasterOptions,
    on_progress: Callable[[int, int], None] | None = None,
    on_ready: Callable[[ReadySummary], None] | None = None,
) -> None:
    """Run the farm until SIGINT/SIGTERM or `POST /api/v1/shutdown`; raises FarmError."""
    began = time.monotonic()
    check_api_exposure(options)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    # First of all: a SIGTERM while the sockets are being bound must still stop the farm
    # cleanly (the handler only sets an event; the start below then gives way to the stop).
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop_requested.set)
    try:
        sockets = bind_all(plan.servers())
    except BaseException:
        _remove_signal_handlers(loop)
        raise
    try:
        supervisor = Supervisor(plan, sockets, options.supervisor)
    except BaseException:
        for sock in sockets.values():
            sock.close()
        _remove_signal_handlers(loop)
        raise
    supervisor.on_progress = on_progress
    supervisor.on_fatal = stop_requested.set
    runner: web.AppRunner | None = None
    metrics_runner: web.AppRunner | None = None
    faults: FaultTable | None = None
    try:
        inventory, switch = Inventory(supervisor), Switch(supervisor)
        faults = FaultTable(supervisor, switch)
        inventory.faults = faults.faults_of
        app = build_app(
            supervisor,
            stop_requested.set,
            options.api_token,
            _metrics_urls(options),
            inventory=inventory,
            switch=switch,
            faults=faults,
        )
        runner = await _start_api(app, options.api_host, options.api_port)
        if options.metrics_port is not None:
            metrics_app = build_metrics_app(supervisor, faults)
            metrics_host = options.metrics_host or options.api_host
            metrics_runner = await _start_api(
                metrics_app, metrics_host, options.metrics_port, "--metrics-port"
            )
        starting = asyncio.create_task(supervisor.start())
        stopping = asyncio.create_task(stop_requested.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # raises BootError
            if on_ready is not None:
                on_ready(_summary(plan, supervisor, options, time.monotonic() - began))
            await stopping
        else:
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        if supervisor.fatal is not None:
            raise supervisor.fatal
    finally:
        # Handlers stay until everything is released: a second Ctrl-C during the stop
        # must not kill the master halfway through.
        if faults is not None:
            await faults.close()
        await supervisor.stop()
        if runner is not None:
            await runner.cleanup()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        _remove_signal_handlers(loop)


def check_api_exposure(options: MasterOptions) -> None:
    """Refuse an API that anyone on the network could drive: non-loopback and no token."""
    if options.api_token or options.api_insecure or _loopback(options.api_host):
        return
    raise ConfigError(
        f"the control API would listen on {options.api_host} without a token, so anyone who "
        "reaches it could change values and stop the farm; set one with --api-token TOKEN "
        "(or FARM_API_TOKEN), or pass --api-insecure to accept the risk"
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def _remove_signal_handlers(loop: asyncio.AbstractEventLoop) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(signum)


def _metrics_urls(options: MasterOptions) -> tuple[str, ...]:
    """Where /metrics is served, the separate listener first."""
    urls = [f"http://{_url_host(options.api_host)}:{options.api_port}/metrics"]
    if options.metrics_port is not None:
        host = _url_host(options.metrics_host or options.api_host)
        urls.insert(0, f"http://{host}:{options.metrics_port}/metrics")
    return tuple(urls)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


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
        addresses=describe((spec.host, spec.port) for spec in plan.servers()),
        workers=len(supervisor.slots),
        pids=tuple(slot.pid for slot in supervisor.slots if slot.pid is not None),
        api_url=f"{base}/api/v1/status",
        metrics_url=_metrics_urls(options)[0],
        seconds=seconds,
        failed=failed,
    )
