"""The control API of a running farm, in two parts: the first listens while the workers
boot, the rest is loaded once.

Called by farm.master.run once the workers are spawned; this module and what it imports
(aiohttp, numpy, farm.master.http.core) are loaded in a thread meanwhile. The first part
binds the API's port (and the metrics listener's) and answers status, ready and shutdown
from the supervisor; every other request goes to the rest (farm.master.wiring: the fault
table, fleet, scenario player, /metrics...), which is loaded off the loop at the first
such request, or when farm.master.run asks for it at ready, whichever comes first. A
request for it that comes earlier waits for it. The rest's parts are closed after both
listeners have stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from farm.master.http.access import Hosts
from farm.master.http.core import (
    Farm,
    Later,
    Once,
    first_app,
    first_handlers,
    part_of,
    start_site,
)
from farm.master.options import MasterOptions
from farm.master.supervision.supervisor import Supervisor

if TYPE_CHECKING:
    from farm.master.state.saver import StateKeeper
    from farm.master.wiring import Rest


async def open_api(
    supervisor: Supervisor,
    options: MasterOptions,
    request_stop: Callable[[], None],
    keeper: StateKeeper | None,
    cleanup: contextlib.AsyncExitStack,
    loopback: bool,
) -> Once[Rest]:
    """Start serving the API's first part; returns the rest's loader (awaiting what it
    returns loads it, once). Whatever closes goes on `cleanup`. `loopback`: the API listens
    on this host's loopback. Raises PortBusyError."""
    closes = contextlib.AsyncExitStack()  # the rest's parts
    cleanup.push_async_callback(closes.aclose)  # pushed first: runs after the listeners stop

    def scenario() -> dict[str, Any] | None:
        loaded = rest.value
        return loaded.player.summary() if loaded is not None else None

    farm = Farm(
        supervisor=supervisor,
        request_stop=request_stop,
        metrics_urls=options.metrics_urls(),
        scenario=scenario,
        state=keeper.summary if keeper is not None else lambda: None,
    )
    handlers = first_handlers(farm)

    async def load() -> Rest:
        await asyncio.to_thread(importlib.import_module, "farm.master.wiring")
        from farm.master.wiring import build_rest  # loaded just above: nothing left to load

        return build_rest(supervisor, options, handlers, keeper, closes)

    rest = Once(load)
    cleanup.push_async_callback(rest.cancel)  # a stop while it loads

    hosts = Hosts.of(options.api_allow_hosts, bool(options.api_token), loopback)
    app = first_app(
        options.api_token, hosts, handlers, Later(part_of(rest, lambda loaded: loaded.api))
    )
    cleanup.push_async_callback((await start_site(app, options.api_host, options.api_port)).cleanup)
    if options.metrics_port is not None:
        metrics_app = first_app(
            None, hosts, {}, Later(part_of(rest, lambda loaded: loaded.metrics))
        )
        metrics_host = options.metrics_host or options.api_host
        runner = await start_site(metrics_app, metrics_host, options.metrics_port, "--metrics-port")
        cleanup.push_async_callback(runner.cleanup)
    return rest
