"""What the master builds on its supervisor, and the control API that serves it.

The second half of farm.master.run's start: the fault table, the fleet's inventory, switch
and scaler, the scenario player, and the API (and the separate /metrics listener) over them.
Its imports (aiohttp, prometheus_client, numpy, pydantic: about half a second of a start)
are loaded after the workers' processes are launched, while they load theirs, and off the
loop (farm.master.run).
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable

from aiohttp import web

from farm.errors import PortBusyError
from farm.master.faults.table import FaultTable
from farm.master.fleet.inventory import Inventory
from farm.master.fleet.scale import Scaler
from farm.master.fleet.switch import Switch
from farm.master.http.access import Hosts
from farm.master.http.app import build_app, build_metrics_app
from farm.master.observe.tallies import ClientTallies
from farm.master.options import MasterOptions
from farm.master.scenario.player import ScenarioPlayer
from farm.master.scenario.steps import StepActions
from farm.master.state.saver import StateKeeper
from farm.master.supervision.supervisor import Supervisor


async def open_api(
    supervisor: Supervisor,
    options: MasterOptions,
    request_stop: Callable[[], None],
    keeper: StateKeeper | None,
    cleanup: contextlib.AsyncExitStack,
    loopback: bool,
) -> ScenarioPlayer:
    """Build everything the API serves over `supervisor` and start serving it; each part's
    close goes on `cleanup`. Returns the scenario player (it begins when the farm is ready).
    `loopback`: the API listens on this host's loopback. Raises PortBusyError."""
    refresh: tuple[Callable[[], object], ...] = ()  # what a scale tells, besides the API's
    if keeper is not None:
        refresh = (keeper.save_soon,)  # a scaled farm is saved at once, not at the interval
    hosts = Hosts.of(options.api_allow_hosts, bool(options.api_token), loopback)
    inventory, switch = Inventory(supervisor), Switch(supervisor)
    faults = FaultTable(supervisor, switch)
    cleanup.push_async_callback(faults.close)
    inventory.faults = faults.faults_of
    inventory.overlay = faults.overlay
    scaler = Scaler(supervisor, (inventory.refresh, switch.refresh, faults.refresh, *refresh))
    actions = StepActions(faults, switch, inventory, scaler.scale, scaler.counts)
    player = ScenarioPlayer(actions, supervisor.plan.fleets, supervisor.plan.templates)
    cleanup.push_async_callback(player.close)  # before the faults (callbacks run last first)
    tallies = ClientTallies(supervisor)  # per client, for /metrics
    tallies.start()
    cleanup.push_async_callback(tallies.stop)
    app = build_app(
        supervisor,
        request_stop,
        options.api_token,
        options.metrics_urls(),
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
    cleanup.push_async_callback((await _start(app, options.api_host, options.api_port)).cleanup)
    if options.metrics_port is not None:
        metrics_app = build_metrics_app(supervisor, faults, player, hosts, tallies)
        metrics_host = options.metrics_host or options.api_host
        metrics_runner = await _start(
            metrics_app, metrics_host, options.metrics_port, "--metrics-port"
        )
        cleanup.push_async_callback(metrics_runner.cleanup)
    return player


async def _start(
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
