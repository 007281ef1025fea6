"""The master's own families of /metrics in a prometheus_client registry: build info, servers
desired and ready, the workers (farm.master.metrics.workers), faults active by kind, the
scenario's step, the clients (farm.master.metrics.clients), and the master's own process
(prometheus_client's process collector: process_cpu_seconds_total,
process_resident_memory_bytes, process_open_fds, ...).

Part of the metrics exposition: farm.master.metrics.servers puts this registry's text first
on the page and appends the per-server families, which stay rendered by hand (a quarter of
a million samples at 10,000 servers: several times too slow through metric families). Each
collector reads its data at the scrape, in the scrape's thread; nothing here is updated on
any other path (the clients' summary is replaced whole by a task of the master's loop).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from farm.master.faults.table import FaultTable
from farm.master.metrics.clients import ClientsCollector
from farm.master.metrics.series import PREFIX
from farm.master.metrics.workers import FarmCollector, RoleCollector, WorkerCollector
from farm.master.observe.tallies import ClientTallies
from farm.master.supervision.supervisor import Supervisor

if TYPE_CHECKING:
    from farm.master.scenario.player import ScenarioPlayer


class FaultsCollector(Collector):
    """modbus_farm_faults_active by kind, every kind present; modbus_farm_outages_total by
    server kind (offline, reboot), from 0, so that `rate()` sees the first outage (the
    per-server injection counter of an outage appears at 1, and a rate over it reads 0)."""

    def __init__(self, faults: FaultTable) -> None:
        self.faults = faults

    def collect(self) -> Iterator[Metric]:
        active = GaugeMetricFamily(
            PREFIX + "faults_active", "Faults active now (scheduled ones not yet).", labels=["kind"]
        )
        for kind, count in self.faults.active_by_kind().items():
            active.add_metric([kind], count)
        yield active
        outages = CounterMetricFamily(
            PREFIX + "outages",
            "Servers taken down by a fault (offline, reboot), in all, since the farm started.",
            labels=["kind"],
        )
        for kind, count in self.faults.outages.items():
            outages.add_metric([kind], count)
        yield outages


class ScenarioCollector(Collector):
    """modbus_farm_scenario_step by step, once a scenario was played."""

    def __init__(self, player: ScenarioPlayer) -> None:
        self.player = player

    def collect(self) -> Iterator[Metric]:
        marks = self.player.step_marks()
        if not marks:
            return
        step = GaugeMetricFamily(
            PREFIX + "scenario_step",
            "1 for the scenario step started last, 0 for the others.",
            labels=["step", "name"],  # numbered from 1, as the log and the page
        )
        for number, name, value in marks:
            step.add_metric([str(number), name], value)
        yield step


def master_registry(
    supervisor: Supervisor,
    build: dict[str, str],
    faults: FaultTable | None = None,
    scenario: ScenarioPlayer | None = None,
    clients: ClientTallies | None = None,
) -> CollectorRegistry:
    """A registry of the master's families for one supervisor (one per /metrics route)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        FarmCollector(build, lambda: supervisor.plan.servers_total, supervisor.servers_ready)
    )
    registry.register(WorkerCollector(lambda: supervisor.slots))
    registry.register(RoleCollector(lambda: supervisor.slots))
    if faults is not None:
        registry.register(FaultsCollector(faults))
    if scenario is not None:
        registry.register(ScenarioCollector(scenario))
    if clients is not None:
        tallies = clients  # bound here: the lambda reads its `series` at each scrape
        registry.register(ClientsCollector(lambda: tallies.series))
    ProcessCollector(registry=registry)
    return registry
