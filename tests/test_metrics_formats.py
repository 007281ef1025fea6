"""/metrics in both formats a scraper may ask for: the text format by default, OpenMetrics
on `Accept: application/openmetrics-text`; each read by prometheus_client's own parser (the
OpenMetrics one is strict: a wrong TYPE name, a missing or second `# EOF` fail it) and the
text by promtool, and both carrying the same samples.
"""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families

from tests.farmproc import HOST, FarmProcess, wait_for
from tests.prometheus_server import loaded
from tests.tools import tool

# What Prometheus 2.x sends (3.x adds escaping=...; prometheus_client negotiates both).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
Keys = set[tuple[str, frozenset[tuple[str, str]]]]


def get(port: int, accept: str | None) -> tuple[str, str]:
    """(Content-Type, body) of one scrape."""
    headers = {"Accept": accept} if accept is not None else {}
    request = urllib.request.Request(f"http://{HOST}:{port}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode()


def keys(families: Iterable[Metric]) -> Keys:
    return {
        (sample.name, frozenset(sample.labels.items()))
        for family in families
        for sample in family.samples
    }


def promtool_check(text: str) -> None:
    lint = subprocess.run(
        [tool("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), (
        lint.stdout + lint.stderr
    )


def test_text_by_default_openmetrics_when_asked(farm: FarmProcess) -> None:
    with loaded(farm, range(3)) as loads:
        wait_for(lambda: all(load.answered > 30 for load in loads), 20, "load on three servers")
    kind, text = get(farm.api_port, None)
    assert kind == "text/plain; version=0.0.4; charset=utf-8"
    assert get(farm.api_port, "text/plain;version=0.0.4")[0] == kind
    om_kind, om_text = get(farm.api_port, PROMETHEUS_ACCEPT)
    assert om_kind == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    assert get(farm.api_port, "application/openmetrics-text")[0] == om_kind

    assert "# EOF" not in text
    assert om_text.endswith("\n# EOF\n") and om_text.count("# EOF") == 1
    promtool_check(text)
    text_keys = keys(text_string_to_metric_families(text))
    om_families = list(openmetrics_parser.text_string_to_metric_families(om_text))
    # Both pages hold the same series: the master's (the registry's, the process collector's)
    # and the per-server ones, counters under their `_total` samples.
    names = {family.name: family.type for family in om_families}
    assert names["modbus_farm_requests"] == "counter"
    assert names["modbus_farm_worker_restarts"] == "counter"
    assert names["modbus_farm_request_duration_seconds"] == "histogram"
    assert names["process_cpu_seconds"] == "counter"
    assert names["modbus_farm_faults_active"] == "gauge"
    assert keys(om_families) == text_keys
    assert (
        "modbus_farm_requests_total",
        frozenset({("server", "device-0000"), ("worker", "0"), ("function_code", "3")}),
    ) in text_keys


def test_the_master_process_is_in_its_own_families(farm: FarmProcess) -> None:
    _, text = get(farm.api_port, None)
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    # prometheus_client's process collector, for the master (it reads /proc/self).
    assert samples["process_resident_memory_bytes"] > 10 * 2**20
    assert samples["process_open_fds"] > 20  # the master holds every listening socket
    assert samples["modbus_farm_servers_desired"] == 20
