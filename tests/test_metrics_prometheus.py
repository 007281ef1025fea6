"""A real Prometheus scrapes a real farm under load: every query of every shipped dashboard
returns data, and kill -9 of a worker shows no counter reset.

Prometheus is Debian's binary, configured with what `farm prometheus-config` prints (a
1 s scrape interval), on a free loopback port, storage in a temporary directory, stopped
by PID. Grafana is not here: its variables and macros are substituted as Grafana would
for a 1 s scrape interval, and each expression is sent to Prometheus's query API.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient

from farm.client import FarmClient, Servers
from tests.conftest import start_farm
from tests.farmproc import RESTART_DEADLINE_S, FarmProcess, wait_for
from tests.prometheus_server import Prometheus, loaded, running_prometheus

pytestmark = pytest.mark.timeout(150)
DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"
SERVER = "device-0000"
# What Grafana puts in for a 1 s scrape interval over a short range.
MACROS = {
    "__rate_interval": "5s",
    "__interval": "2s",
    "__range": "1m",
    "__range_s": "60",
    "server": SERVER,
    "fleet": ".*",  # All
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^label_values\((.+),\s*(\w+)\)$")


def substitute(expr: str) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in MACROS:
            raise AssertionError(f"no value for ${name} in {expr!r}")
        return MACROS[name]

    return _VARIABLE.sub(one, expr)


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels inside collapsed rows


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every target of every panel and every query variable."""
    queries = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in panels(board):
            for target in panel.get("targets", []):
                queries.append((f"{path.name}: {panel['title']}", target["expr"]))
        for annotation in board.get("annotations", {}).get("list", []):
            if "expr" in annotation:
                queries.append(
                    (f"{path.name}: annotation {annotation['name']}", annotation["expr"])
                )
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                query = variable["query"]
                text = query["query"] if isinstance(query, dict) else query
                match = _LABEL_VALUES.match(text)
                assert match, f"{path.name}: ${variable['name']} is not label_values(metric, label)"
                metric, label = match.groups()
                queries.append(
                    (f"{path.name}: ${variable['name']}", f"group by ({label}) ({metric})")
                )
    return queries


def scrape_config(farm: FarmProcess) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "farm", "prometheus-config", "--api-port", str(farm.api_port),
         "--scrape-interval", "1s", "--rules", str(DASHBOARDS / "recording-rules.yml")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def scraped(prometheus: Prometheus, expr: str) -> float:
    result = prometheus.query(expr)
    return float(result[0]["value"][1]) if result else 0.0


def test_every_dashboard_query_returns_data(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) > 30
    story = tmp_path / "story.yaml"  # a scenario step, for the fleet board's annotation
    story.write_text(
        "scenario:\n  steps:\n    - {at: 0s, set: {target: device-0005, point: load_pct, value: 1}}\n"
    )
    farm = start_farm(6, workers=2, extra=["--scenario", str(story)])
    try:
        farm.wait_ready()
        with (
            running_prometheus(scrape_config(farm), tmp_path) as prometheus,
            loaded(farm, range(6)),
        ):
            wait_for(prometheus.targets_up, 20, "Prometheus to scrape the farm")
            empty: list[str] = []

            def all_answer() -> bool:
                empty[:] = [
                    f"{where}: {expr}"
                    for where, expr in queries
                    if not _has_data(prometheus.query(substitute(expr)))
                ]
                return not empty

            try:
                wait_for(all_answer, 40, "every dashboard query to return data", interval=0.5)
            except AssertionError:
                raise AssertionError("queries without data:\n" + "\n".join(empty)) from None
            # The recording rules join every per-server series to its fleet: $fleet = one
            # fleet keeps that fleet's servers, another name keeps none.
            fleets = {s["metric"]["fleet"] for s in prometheus.query("modbus_farm_server_info")}
            for fleet in fleets:
                one = prometheus.query(
                    f'count by (fleet) (server:modbus_farm_requests:rate1m{{fleet="{fleet}"}})'
                )
                assert [s["metric"] for s in one] == [{"fleet": fleet}], one
            assert not prometheus.query('server:modbus_farm_requests:rate1m{fleet="no-such"}')
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr


def _has_data(result: list[dict[str, Any]]) -> bool:
    """At least one sample, and not only NaN (what histogram_quantile gives for no traffic)."""
    return any(sample["value"][1] != "NaN" for sample in result)


def test_kill_9_shows_no_counter_reset(tmp_path: Path) -> None:
    farm = start_farm(4, workers=2)
    server = f'server="{SERVER}"'
    try:
        farm.wait_ready()
        with (
            running_prometheus(scrape_config(farm), tmp_path) as prometheus,
            loaded(farm, range(4)) as loads,
        ):
            wait_for(prometheus.targets_up, 20, "Prometheus to scrape the farm")
            samples = (
                f"count_over_time(modbus_farm_requests_total{{{server},function_code='3'}}[5m])"
            )
            wait_for(lambda: scraped(prometheus, samples) >= 3, 20, "three scrapes under load")
            answered = loads[0].answered
            os.kill(farm.worker_pids()[0], signal.SIGKILL)  # worker 0 hosts device-0000
            killed_at = time.monotonic()
            wait_for(
                lambda: (
                    farm.status()["workers"][0]["restarts"] == 1
                    and loads[0].answered > answered + 50
                ),
                RESTART_DEADLINE_S,
                "worker 0 replaced and serving the load again",
            )
            seen = scraped(prometheus, samples)
            wait_for(
                lambda: (
                    scraped(prometheus, samples) >= seen + 3
                    and scraped(prometheus, "modbus_farm_worker_restarts_total{worker='0'}") == 1
                ),
                20,
                "three more scrapes after the restart",
            )
            window = f"{int(time.monotonic() - killed_at) + 30}s"
            for metric in (
                "modbus_farm_requests_total",
                "modbus_farm_exceptions_total",
                "modbus_farm_request_duration_seconds_count",
                "modbus_farm_received_bytes_total",
                "modbus_farm_connections_accepted_total",
                "modbus_farm_worker_cpu_seconds_total",
            ):
                resets = prometheus.query(f"resets({metric}[{window}]) > 0")
                assert resets == [], f"{metric} was reset: {resets}"
            rate = f"sum(rate(modbus_farm_requests_total{{{server}}}[{window}]))"
            assert scraped(prometheus, rate) > 0
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr


def test_latency_buckets_tell_300_ms_from_430_ms(tmp_path: Path) -> None:
    """Two delay faults, 300 and 430 ms: the median Prometheus computes from the farm's
    buckets puts each in its own bucket (with bounds 0.25 then 0.5 both read alike)."""
    farm = start_farm(2, workers=1)
    stop = threading.Event()
    try:
        farm.wait_ready()
        client = FarmClient.at("127.0.0.1", farm.api_port)
        client.fault("delay", target=Servers("device-0000"), ms=300)
        client.fault("delay", target=Servers("device-0001"), ms=430)
        pollers = [threading.Thread(target=poll, args=(farm.port(i), stop)) for i in range(2)]
        for poller in pollers:
            poller.start()
        with running_prometheus(scrape_config(farm), tmp_path) as prometheus:
            wait_for(prometheus.targets_up, 20, "Prometheus to scrape the farm")
            expr = (
                "histogram_quantile(0.5, sum by (le, server) "
                "(rate(modbus_farm_request_duration_seconds_bucket[10s])))"
            )
            medians: dict[str, float] = {}

            def both() -> bool:
                for sample in prometheus.query(expr):
                    if sample["value"][1] != "NaN":
                        medians[sample["metric"]["server"]] = float(sample["value"][1])
                return len(medians) == 2

            wait_for(both, 40, "both servers' median latency", interval=0.5)
    finally:
        stop.set()
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    # A 300 ms timer may fire a hair early (the 0.3 bucket) or late (the 0.4 one): either way
    # below 0.4, and the 430 ms one above it.
    assert 0.25 < medians["device-0000"] <= 0.4 < medians["device-0001"] <= 0.5, medians


def poll(port: int, stop: threading.Event) -> None:
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=3, retries=0)
    try:
        while not stop.is_set():
            if not client.connected and not client.connect():
                stop.wait(0.2)
                continue
            try:
                client.read_holding_registers(0, count=1, device_id=1)
            except Exception:  # the farm stopped under it
                client.close()
    finally:
        client.close()


def test_an_offline_fault_shows_as_a_rate_of_outages(tmp_path: Path) -> None:
    """The first outage shows in rate(): the farm-wide counter is there from 0 (a server's
    own injection series appears at 1, and a rate over it reads 0)."""
    farm = start_farm(3, workers=1)
    try:
        farm.wait_ready()
        client = FarmClient.at("127.0.0.1", farm.api_port)
        with running_prometheus(scrape_config(farm), tmp_path) as prometheus:
            wait_for(prometheus.targets_up, 20, "Prometheus to scrape the farm")
            wait_for(
                lambda: prometheus.query('modbus_farm_outages_total{kind="offline"}'),
                20,
                "the outage counter at 0",
                interval=0.5,
            )
            client.fault("offline", target=Servers("device-0000", "device-0001"), duration="2s")
            expr = 'sum(rate(modbus_farm_outages_total{kind="offline"}[10s]))'
            wait_for(lambda: scraped(prometheus, expr) > 0, 30, "a rate of outages", interval=0.5)
            single = 'sum(rate(modbus_farm_fault_injections_total{kind="offline"}[10s]))'
            assert scraped(prometheus, single) == 0  # what the dashboard showed before
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
