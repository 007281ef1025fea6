"""How a farm's master is run: the `farm up` options that are not the plan.

Read by farm.master.run (which starts the farm) and farm.master.wiring (which builds its API);
made by farm.cli.up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from farm.master.fleetview.stream import STALL_S
from farm.master.supervision.supervisor import SupervisorOptions

if TYPE_CHECKING:  # a type alone: the scenario model loads pydantic
    from farm.config.scenario.model import Timeline


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

    def metrics_urls(self) -> tuple[str, ...]:
        """Where /metrics is served, the separate listener first."""
        urls = [f"http://{url_host(self.api_host)}:{self.api_port}/metrics"]
        if self.metrics_port is not None:
            host = url_host(self.metrics_host or self.api_host)
            urls.insert(0, f"http://{host}:{self.metrics_port}/metrics")
        return tuple(urls)


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
