"""Test support for metrics: read a farm's scrape, run a real Prometheus, load a farm.

The scrape is parsed with prometheus_client's parser (not the farm's own code); Prometheus
is Debian's binary, started on a free loopback port with its storage in a temporary
directory and stopped by PID; the load is pymodbus's client, bounded in count and time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from tests.farmproc import HOST, FarmProcess, free_port, wait_for
from tests.tools import tool

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape_text(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return str(response.read().decode())


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(farm: FarmProcess) -> Samples:
    return parse(scrape_text(farm.api_port))


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


class Load(threading.Thread):
    """One pymodbus client polling one server with a mix that includes exceptions.

    Bounded: stops at `stop`, after `limit_s` seconds or after `max_requests`. Reconnects
    when its server's worker is replaced.
    """

    def __init__(self, port: int, limit_s: float = 90.0, max_requests: int = 100_000) -> None:
        super().__init__(daemon=True)
        self.port, self.limit_s, self.max_requests = port, limit_s, max_requests
        self.stop = threading.Event()
        self.answered = 0

    def run(self) -> None:
        client = ModbusTcpClient(HOST, port=self.port, timeout=2, retries=0)
        deadline = time.monotonic() + self.limit_s
        sent = 0
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                if sent >= self.max_requests:
                    break
                sent += 1
                try:
                    if not client.connected and not client.connect():
                        self.stop.wait(0.05)  # the worker is being replaced: back off
                        continue
                    self._one(client, sent)
                    self.answered += 1
                except (ModbusException, OSError):  # dropped while its worker is replaced
                    client.close()
                self.stop.wait(0.002)  # a SCADA-like pace, and CPU left for Prometheus
        finally:
            client.close()

    @staticmethod
    def _one(client: ModbusTcpClient, n: int) -> None:
        if n % 10 == 0:
            client.read_holding_registers(5000, count=1)  # past the table: exception 02
        elif n % 10 == 1:
            client.write_register(10, n & 0xFFFF)
        elif n % 10 == 2:
            client.write_registers(20, [1, 2, 3])
        elif n % 10 == 3:
            client.read_input_registers(0, count=4)
        else:
            client.read_holding_registers(0, count=10)


@contextlib.contextmanager
def loaded(farm: FarmProcess, servers: range) -> Iterator[list[Load]]:
    loads = [Load(farm.port(i)) for i in servers]
    for load in loads:
        load.start()
    try:
        yield loads
    finally:
        for load in loads:
            load.stop.set()
        for load in loads:
            load.join(10)


class Prometheus:
    """A real Prometheus server on a free loopback port, scraping what `config` says."""

    def __init__(self, config: str, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.config = workdir / "prometheus.yml"
        self.config.write_text(config)
        self.log = workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    tool("prometheus"),
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address={HOST}:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        wait_for(self._ready, 30, "Prometheus to be ready", interval=0.1)
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log.read_text()[-2000:]}")
        with urllib.request.urlopen(f"http://{HOST}:{self.port}/-/ready", timeout=2) as reply:
            return bool(reply.status == 200)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def api(self, path: str, **params: str) -> Any:
        url = f"http://{HOST}:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (a vector's samples, or a scalar as one sample)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def targets_up(self) -> bool:
        active = self.api("targets")["activeTargets"]
        return bool(active) and all(target["health"] == "up" for target in active)


@contextlib.contextmanager
def running_prometheus(config: str, workdir: Path) -> Iterator[Prometheus]:
    prometheus = Prometheus(config, workdir)
    try:
        yield prometheus.start()
    finally:
        prometheus.stop()
