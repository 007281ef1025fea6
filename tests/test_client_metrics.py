"""Polls by client on /metrics (farm.master.observe.tallies, farm.master.metrics.clients):
a real poller's requests, servers and interval; the servers it stopped polling; counters
that a worker's kill -9 does not reset; and a bound that many source addresses cannot
break (pymodbus clients from their own loopback addresses)."""

from __future__ import annotations

import os
import signal
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pymodbus.client import ModbusTcpClient

from farm.master.observe.tallies import MAX_NAMED, OTHER, REFRESH_S
from tests.conftest import ready_farm
from tests.farmproc import HOST, RESTART_DEADLINE_S, FarmProcess, wait_for
from tests.poller import Poller

pytestmark = pytest.mark.timeout(180)
INTERVAL_S = 0.2
TOLERANCE_S = 0.05  # as tests/test_observe.py; the histogram adds at most ~2 %
TALLIED = 4 * REFRESH_S + 10  # a few tallies, on a loaded box
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def farm() -> Iterator[FarmProcess]:
    running = ready_farm(8)
    try:
        yield running
    finally:
        code, _, stderr = running.stop()
        assert code == 0, stderr


def scrape(farm: FarmProcess) -> Samples:
    url = f"http://{HOST}:{farm.api_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("modbus_farm_client")
        for sample in family.samples
    }


def value(samples: Samples, name: str, client: str, **labels: str) -> float | None:
    key = (name, tuple(sorted({"client": client, **labels}.items())))
    return samples.get(key)


def test_a_pollers_requests_servers_and_interval_show_by_client(farm: FarmProcess) -> None:
    source = "127.0.0.5"
    polled = 6
    targets = [(HOST, farm.port(i)) for i in range(polled)]
    seen: list[Samples] = [{}]

    def metric(name: str, **labels: str) -> float | None:
        return value(seen[0], name, source, **labels)

    with Poller(targets, source, INTERVAL_S) as poller:

        def polling() -> bool:
            seen[0] = scrape(farm)
            return (
                metric("modbus_farm_client_servers") == polled
                and (metric("modbus_farm_client_requests_total") or 0) > 5 * polled
                and metric("modbus_farm_client_poll_interval_seconds", quantile="0.99") is not None
            )

        wait_for(polling, TALLIED, f"{source}'s polls on /metrics", interval=0.5)
        p50 = metric("modbus_farm_client_poll_interval_seconds", quantile="0.5")
        p99 = metric("modbus_farm_client_poll_interval_seconds", quantile="0.99")
        assert p50 is not None and abs(p50 - INTERVAL_S) <= TOLERANCE_S, seen[0]
        assert p99 is not None and p99 >= p50
        assert metric("modbus_farm_client_connections_total") == polled
        assert metric("modbus_farm_client_stale_servers") == 0
        first = metric("modbus_farm_client_requests_total") or 0
        wait_for(
            lambda: (value(scrape(farm), "modbus_farm_client_requests_total", source) or 0) > first,
            TALLIED,
            "the request counter to grow",
        )
    sent = poller.polls

    def stopped() -> bool:
        seen[0] = scrape(farm)
        return (
            metric("modbus_farm_client_stale_servers") == polled
            and metric("modbus_farm_client_servers") == 0
            and metric("modbus_farm_client_requests_total") == sent
        )

    wait_for(stopped, TALLIED, f"{source}'s servers to show as no longer polled", interval=0.5)
    assert metric("modbus_farm_client_poll_interval_seconds", quantile="0.5") is None
    # The counters are kept by the master: a worker's kill -9 takes nothing back.
    os.kill(farm.worker_pids()[0], signal.SIGKILL)
    wait_for(
        lambda: (
            farm.status()["workers"][0]["restarts"] == 1
            and farm.status()["workers"][0]["state"] == "ready"
        ),
        RESTART_DEADLINE_S,
        "worker 0 replaced",
    )
    with Poller(targets[:1], source, INTERVAL_S):
        wait_for(
            lambda: (value(scrape(farm), "modbus_farm_client_requests_total", source) or 0) > sent,
            TALLIED,
            "the counter to go on from where it was",
        )


def test_many_client_addresses_are_summed_past_the_bound(farm: FarmProcess) -> None:
    """A scan from more addresses than the bound: MAX_NAMED series of their own, the rest
    in one 'other' series, and every request counted once."""
    sources = [f"127.0.1.{n}" for n in range(1, MAX_NAMED + 9)]
    reads = 3
    for source in sources:
        client = ModbusTcpClient(HOST, port=farm.port(0), timeout=2, source_address=(source, 0))
        assert client.connect(), source
        try:
            for _ in range(reads):
                assert not client.read_holding_registers(0, count=2, device_id=1).isError()
        finally:
            client.close()
    seen: list[Samples] = [{}]

    def requests() -> dict[str, float]:
        return {
            dict(labels)["client"]: count
            for (name, labels), count in seen[0].items()
            if name == "modbus_farm_client_requests_total"
        }

    def counted() -> bool:
        seen[0] = scrape(farm)
        return sum(requests().values()) == reads * len(sources)

    wait_for(counted, TALLIED, "every request counted", interval=0.5)
    by_client = requests()
    assert len(by_client) == MAX_NAMED + 1, by_client
    assert by_client[OTHER] == reads * (len(sources) - MAX_NAMED), by_client
    assert set(by_client) - {OTHER} <= set(sources)
    connections = sum(
        count for (name, _), count in seen[0].items() if name.endswith("connections_total")
    )
    assert connections == len(sources)
    for name in {name for name, _ in seen[0]}:
        series = [labels for each, labels in seen[0] if each == name]
        assert len(series) <= 2 * (MAX_NAMED + 1), (name, len(series))
