"""What the master builds on its supervisor for the control API past its first routes.

The rest of farm.master.api: the fault table, the fleet's inventory, switch and scaler, the
scenario player, the client tallies, and the applications that serve them (the API's rest,
and /metrics for the separate metrics listener). Its imports (pydantic, prometheus_client,
the fault kinds' models, the fleet view: about 0.35 s of CPU) are loaded off the loop when
the farm is ready, or at the first request that needs them, whichever comes first
(farm.master.api).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from farm.master.faults.table import FaultTable
from farm.master.fleet.inventory import Inventory
from farm.master.fleet.scale import Scaler
from farm.master.fleet.switch import Switch
from farm.master.http.app import Services, metrics_rest, rest_app
from farm.master.http.core import Handler
from farm.master.observe.tallies import ClientTallies
from farm.master.options import MasterOptions
from farm.master.scenario.player import ScenarioPlayer
from farm.master.scenario.steps import StepActions
from farm.master.state.saver import StateKeeper
from farm.master.supervision.supervisor import Supervisor


@dataclass(frozen=True, slots=True)
class Rest:
    """The API's routes past its first ones, /metrics (None: no metrics listener), and the
    scenario player (it begins when the farm is ready)."""

    api: web.Application
    metrics: web.Application | None
    player: ScenarioPlayer


def build_rest(
    supervisor: Supervisor,
    options: MasterOptions,
    handlers: dict[tuple[str, str], Handler],
    keeper: StateKeeper | None,
    closes: contextlib.AsyncExitStack,
) -> Rest:
    """Build everything the rest of the API serves over `supervisor`; each part's close goes
    on `closes` (closed once the listeners have stopped). `handlers`: the first routes,
    which the rest documents."""
    refresh: tuple[Callable[[], object], ...] = ()  # what a scale tells, besides the API's
    if keeper is not None:
        refresh = (keeper.save_soon,)  # a scaled farm is saved at once, not at the interval
    inventory, switch = Inventory(supervisor), Switch(supervisor)
    faults = FaultTable(supervisor, switch)
    closes.push_async_callback(faults.close)
    inventory.faults = faults.faults_of
    inventory.overlay = faults.overlay
    scaler = Scaler(supervisor, (inventory.refresh, switch.refresh, faults.refresh, *refresh))
    actions = StepActions(faults, switch, inventory, scaler.scale, scaler.counts)
    player = ScenarioPlayer(actions, supervisor.plan.fleets, supervisor.plan.templates)
    closes.push_async_callback(player.close)  # before the faults (callbacks run last first)
    tallies = ClientTallies(supervisor)  # per client, for /metrics
    tallies.start()
    closes.push_async_callback(tallies.stop)
    services = Services(
        supervisor=supervisor,
        inventory=inventory,
        switch=switch,
        faults=faults,
        scenario=player,
        scaler=scaler,
        clients=tallies,
    )
    api = rest_app(handlers, services, bool(options.api_token), options.view_stall_s)
    metrics = metrics_rest(services) if options.metrics_port is not None else None
    return Rest(api, metrics, player)
