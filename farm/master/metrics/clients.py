"""The per-client families of /metrics, from the summary the master keeps of the workers'
tallies (farm.master.observe.tallies): requests, connections and exceptions by client, the
servers each polls and those it stopped polling, its poll interval (median and 99th
percentile). Label `client`: an address, or "other" for every client past the first
MAX_NAMED, so at most MAX_NAMED + 1 series a family (two a family for the interval).

Part of the metrics exposition (farm.master.metrics.registry registers it). The scrape reads
the summary as it is; it asks no worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from farm.master.metrics.series import PREFIX
from farm.master.observe.tallies import MAX_NAMED, ClientSeries

CLIENT = ["client"]
_OTHER = f"(other: every client past the first {MAX_NAMED} addresses, summed)"


class ClientsCollector(Collector):
    """The modbus_farm_client_* families; none until a client was seen."""

    def __init__(self, series: Callable[[], Sequence[ClientSeries]]) -> None:
        self.series = series

    def collect(self) -> Iterator[Metric]:
        rows = self.series()
        if not rows:
            return
        requests = CounterMetricFamily(
            PREFIX + "client_requests",
            f"Modbus requests the client sent, to every server {_OTHER}.",
            labels=CLIENT,
        )
        connections = CounterMetricFamily(
            PREFIX + "client_connections",
            f"Connections the client made (UDP: new senders) {_OTHER}.",
            labels=CLIENT,
        )
        exceptions = CounterMetricFamily(
            PREFIX + "client_exceptions",
            f"Exception responses sent to the client {_OTHER}.",
            labels=CLIENT,
        )
        servers = GaugeMetricFamily(
            PREFIX + "client_servers",
            f"Servers the client polls: a read it repeats, not missed for 3 of its intervals "
            f"{_OTHER}.",
            labels=CLIENT,
        )
        stale = GaugeMetricFamily(
            PREFIX + "client_stale_servers",
            f"Servers the client polled and stopped polling: none of its reads of them seen "
            f"for 3 of their intervals {_OTHER}.",
            labels=CLIENT,
        )
        interval = GaugeMetricFamily(
            PREFIX + "client_poll_interval_seconds",
            "The client's poll interval over the polls it keeps up: quantile 0.5 is the median "
            "of each poll's median interval, 0.99 the 99th percentile of their 99th "
            f"percentiles (within ~2 %) {_OTHER}.",
            labels=[*CLIENT, "quantile"],
        )
        for row in rows:
            label = [row.client]
            requests.add_metric(label, row.requests)
            connections.add_metric(label, row.connections)
            exceptions.add_metric(label, row.exceptions)
            servers.add_metric(label, row.servers)
            stale.add_metric(label, row.stale)
            if row.p50_s is not None:
                interval.add_metric([row.client, "0.5"], row.p50_s)
            if row.p99_s is not None:
                interval.add_metric([row.client, "0.99"], row.p99_s)
        yield from (requests, connections, exceptions, servers, stale)
        if interval.samples:
            yield interval
