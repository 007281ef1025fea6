"""The farm-wide and per-worker families of /metrics, as prometheus_client collectors: build
info, servers desired and ready, each worker's state, heartbeat, restarts, CPU and memory,
and TLS sessions by role.

Part of the metrics exposition (farm.master.metrics.registry registers them). Each
`collect()` builds its families from the supervisor's slots, the workers' heartbeats and
their shared-memory counters as they are at the scrape: a few samples per worker, so
prometheus_client's objects cost nothing worth measuring here.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from farm.master.metrics.series import PREFIX
from farm.master.supervision.slot import Slot, SlotState

WORKER = ["worker"]


class FarmCollector(Collector):
    """modbus_farm_build_info, servers_desired and servers_ready."""

    def __init__(
        self, build: dict[str, str], desired: Callable[[], int], ready: Callable[[], int]
    ) -> None:
        self.build = build
        self.desired = desired
        self.ready = ready

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily(
            PREFIX + "build_info", "The farm's version; always 1.", labels=list(self.build)
        )
        build.add_metric(list(self.build.values()), 1)
        yield build
        yield GaugeMetricFamily(
            PREFIX + "servers_desired", "Servers the farm should run.", value=self.desired()
        )
        yield GaugeMetricFamily(
            PREFIX + "servers_ready", "Servers answering Modbus requests.", value=self.ready()
        )


class WorkerCollector(Collector):
    """One sample per worker in each family; a family with no sample yet is left out."""

    def __init__(self, slots: Callable[[], Sequence[Slot]]) -> None:
        self.slots = slots

    def collect(self) -> Iterator[Metric]:
        now = time.monotonic()
        up = GaugeMetricFamily(
            PREFIX + "worker_up", "1 if the worker is ready, else 0.", labels=WORKER
        )
        age = GaugeMetricFamily(
            PREFIX + "worker_heartbeat_age_seconds",
            "Seconds since the worker's last heartbeat (grows while it is replaced).",
            labels=WORKER,
        )
        restarts = CounterMetricFamily(
            PREFIX + "worker_restarts_total", "Times the worker was replaced.", labels=WORKER
        )
        lag = GaugeMetricFamily(
            PREFIX + "worker_loop_lag_seconds",
            "How late the worker's event loop woke from its last heartbeat sleep.",
            labels=WORKER,
        )
        cpu = CounterMetricFamily(
            PREFIX + "worker_cpu_seconds_total",
            "CPU time of the worker, summed over its restarts.",
            labels=WORKER,
        )
        rss = GaugeMetricFamily(
            PREFIX + "worker_resident_memory_bytes", "Resident memory of the worker.", labels=WORKER
        )
        servers = GaugeMetricFamily(
            PREFIX + "worker_servers", "Servers the worker hosts and has up.", labels=WORKER
        )
        for slot in self.slots():
            worker = [str(slot.shard.worker)]
            beat = slot.heartbeat
            up.add_metric(worker, int(slot.state is SlotState.READY))
            if slot.last_heartbeat:
                age.add_metric(worker, now - slot.last_heartbeat)
            restarts.add_metric(worker, slot.restarts)
            if beat is not None:
                lag.add_metric(worker, beat.loop_lag_s)
                rss.add_metric(worker, beat.rss_bytes)
            with contextlib.suppress(ValueError):  # released: the farm is stopping
                cpu.add_metric(worker, slot.counters.cpu_seconds())
            serving = slot.state in (SlotState.READY, SlotState.STARTING)
            servers.add_metric(worker, slot.servers_up if serving else 0)
        for family in (up, age, restarts, lag, cpu, rss, servers):
            if family.samples:
                yield family


class RoleCollector(Collector):
    """modbus_farm_tls_sessions_total by worker and role, once a TLS session was counted."""

    def __init__(self, slots: Callable[[], Sequence[Slot]]) -> None:
        self.slots = slots

    def collect(self) -> Iterator[Metric]:
        sessions = CounterMetricFamily(
            PREFIX + "tls_sessions_total",
            "TLS sessions established, by the role in the client's certificate "
            "(none: no role; other: past the first 15 roles a worker saw).",
            labels=["worker", "role"],
        )
        for slot in self.slots():
            with contextlib.suppress(ValueError):  # released: the farm is stopping
                for role, count in slot.counters.roles().items():
                    sessions.add_metric([str(slot.shard.worker), role], count)
        if sessions.samples:
            yield sessions
