"""Prometheus metrics, rendered by the master from what the workers reported.

Sits between the workers and the API (... banks -> metrics -> api). Workers never touch
prometheus_client on the hot path: they count in plain integers and report in heartbeats;
a custom collector builds metric families from the supervisor's view at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from farm import __version__
from farm.supervisor import Supervisor

PREFIX = "modbus_farm_"


class FarmCollector(Collector):
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[InfoMetricFamily | GaugeMetricFamily | CounterMetricFamily]:
        sup = self.supervisor
        yield InfoMetricFamily(
            PREFIX + "build", "modbus-farm build", value={"version": __version__}
        )
        desired = GaugeMetricFamily(PREFIX + "servers_desired", "Servers the farm should run")
        desired.add_metric([], sup.plan.servers_total)
        yield desired
        ready = GaugeMetricFamily(PREFIX + "servers_ready", "Servers answering Modbus requests")
        ready.add_metric([], sup.servers_ready())
        yield ready
        yield from self._workers()

    def _workers(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        now = time.monotonic()
        labels = ["worker"]
        up = GaugeMetricFamily(PREFIX + "worker_up", "1 if the worker is ready", labels=labels)
        age = GaugeMetricFamily(
            PREFIX + "worker_heartbeat_age_seconds",
            "Seconds since the last heartbeat",
            labels=labels,
        )
        restarts = CounterMetricFamily(PREFIX + "worker_restarts", "Worker restarts", labels=labels)
        lag = GaugeMetricFamily(PREFIX + "worker_loop_lag_seconds", "Event-loop lag", labels=labels)
        cpu = CounterMetricFamily(PREFIX + "worker_cpu_seconds", "Worker CPU time", labels=labels)
        rss = GaugeMetricFamily(
            PREFIX + "worker_resident_memory_bytes", "Worker RSS", labels=labels
        )
        hosted = GaugeMetricFamily(PREFIX + "worker_servers", "Servers hosted", labels=labels)
        for slot in self.supervisor.slots:
            key = [str(slot.shard.worker)]
            up.add_metric(key, 1 if slot.state == "ready" else 0)
            restarts.add_metric(key, slot.restarts)
            hosted.add_metric(key, len(slot.shard.servers))
            beat = slot.heartbeat
            if beat is not None:
                age.add_metric(key, now - slot.last_heartbeat)
                lag.add_metric(key, beat.loop_lag_s)
                cpu.add_metric(key, beat.cpu_s)
                rss.add_metric(key, beat.rss_bytes)
        yield from (up, age, restarts, lag, cpu, rss, hosted)


def render_metrics(supervisor: Supervisor) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FarmCollector(supervisor))
    return generate_latest(registry)
