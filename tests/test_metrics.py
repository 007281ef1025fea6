"""/metrics on a real farm: exact counts from real clients, promtool's lint, the separate
metrics port, `farm prometheus-config`, and counters that survive kill -9 of a worker."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from pymodbus.client import ModbusTcpClient

from farm import __version__
from farm.config.templates import Identity
from farm.ipc import stats
from farm.ipc.banks import UnitBank
from farm.ipc.stats import ShardCounters
from farm.master.metrics.servers import FarmMetrics
from farm.worker import engine
from farm.worker.limits import guard as limits
from farm.worker.transports import connection as stream
from tests.conftest import make_farm, start_farm
from tests.farmproc import HOST, FarmProcess, free_port, squatter, wait_for
from tests.prometheus_server import Samples, loaded, parse, scrape, scrape_text, value
from tests.tools import tool

pytestmark = pytest.mark.timeout(120)


def mbap(transaction: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", transaction, 0, len(pdu) + 1, unit) + pdu


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data


def server_samples(samples: Samples, server: str) -> Samples:
    return {key: v for key, v in samples.items() if ("server", server) in key[1]}


class _Transport:
    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default


def in_memory(servers: int) -> ShardCounters:
    """Counters laid out as in a farm, in private memory (no shared-memory tracker process)."""
    buffer = memoryview(bytearray(ShardCounters.size(servers)))
    return ShardCounters(cast(Any, SimpleNamespace(buf=buffer, close=lambda: None)), servers)


def test_durations_land_in_the_right_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three pipelined requests answered in 3 ms: three observations under le=0.005."""
    clock = iter([1_000_000_000, 1_003_000_000])
    monkeypatch.setattr(stream, "perf_counter_ns", lambda: next(clock))
    shard = in_memory(1)
    bank = UnitBank(
        unit_id=1,
        coils=memoryview(bytearray(10)),
        discrete_inputs=memoryview(bytearray(10)),
        holding_registers=memoryview(bytearray(20)),
        input_registers=memoryview(bytearray(20)),
    )
    device = engine.Device("d", {1: bank}, Identity(), shard.server(0))
    connection = stream.ModbusConnection(device, limits.unlimited(device.name, device.counters))
    connection.connection_made(cast(Any, _Transport()))
    connection.data_received(b"".join(mbap(t, 1, b"\x03\x00\x00\x00\x01") for t in (1, 2, 3)))
    connection.connection_lost(None)
    values = shard.snapshot()
    slot = ShardCounters.offset(0)
    buckets = values[slot + stats.DURATION : slot + stats.DURATION_SUM_NS]
    assert buckets[stats.DURATION_BOUNDS_S.index(0.005)] == 3 and sum(buckets) == 3
    assert values[slot + stats.DURATION_SUM_NS] == 3 * 3_000_000
    assert values[slot + stats.REQUEST_SLOT[3]] == 3
    assert values[slot + stats.BYTES_SENT] == 3 * 11
    assert values[slot + stats.CONNECTIONS_OPEN] == 0
    assert values[slot + stats.CONNECTIONS_ACCEPTED] == 1


def test_label_values_are_escaped() -> None:
    name = 'boiler "B"\\2'
    slot = SimpleNamespace(
        shard=SimpleNamespace(
            worker=0,
            servers=(
                SimpleNamespace(
                    name=name, fleet=name, template="t", transport="udp", stats_index=0
                ),
            ),
        ),
        counters=in_memory(1),
        heartbeat=None,
        last_heartbeat=0.0,
        state="starting",
        restarts=0,
        servers_up=0,
    )
    farm = SimpleNamespace(
        slots=[slot], plan=SimpleNamespace(servers_total=1), servers_ready=lambda: 0
    )
    samples = parse(FarmMetrics(cast(Any, farm)).render().decode())
    assert value(samples, "modbus_farm_connections_open", server=name, worker="0") == 0
    info = {"server": name, "worker": "0", "fleet": name, "template": "t", "transport": "udp"}
    assert value(samples, "modbus_farm_server_info", **info) == 1


def test_counts_exactly_what_clients_sent() -> None:
    farm = start_farm(4, workers=2)
    try:
        farm.wait_ready()
        client = ModbusTcpClient(HOST, port=farm.port(0), timeout=3, retries=0)
        assert client.connect()
        for _ in range(7):
            assert not client.read_holding_registers(0, count=2).isError()  # 12 in, 13 out
        for _ in range(3):
            assert not client.write_register(5, 42).isError()  # 12 in, 12 out
        for _ in range(2):
            assert client.read_holding_registers(5000, count=1).isError()  # 12 in, 9 out
        client.close()
        with socket.create_connection((HOST, farm.port(0)), timeout=5) as sock:
            # Two frames in one write: FC 65 (not implemented: 01) and unit 9 (unknown: 0B).
            sock.sendall(mbap(1, 1, b"\x41\x00\x00\x12\x34") + mbap(2, 9, b"\x03\x00\x00\x00\x01"))
            answers = read_exactly(sock, 18)
            assert answers[7:9] == b"\xc1\x01" and answers[16:18] == b"\x83\x0b"
            sock.sendall(struct.pack(">HHHB", 3, 1, 6, 1) + b"\x03\x00\x00\x00\x01")
            assert sock.recv(100) == b""  # malformed (protocol id 1): the farm hangs up

        def settled() -> Samples | None:
            samples = scrape(farm)
            open_now = value(
                samples, "modbus_farm_connections_open", server="device-0000", worker="0"
            )
            return samples if open_now == 0 else None

        samples = wait_for(settled, 10, "both connections to be counted closed")
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    server = {"server": "device-0000", "worker": "0"}
    expected = {
        ("modbus_farm_requests_total", "function_code", "3"): 10,
        ("modbus_farm_requests_total", "function_code", "6"): 3,
        ("modbus_farm_requests_total", "function_code", "other"): 1,
        ("modbus_farm_exceptions_total", "exception_code", "2"): 2,
        ("modbus_farm_exceptions_total", "exception_code", "1"): 1,
        ("modbus_farm_exceptions_total", "exception_code", "11"): 1,
        ("modbus_farm_connections_closed_total", "reason", "malformed_frame"): 1,
    }
    for (name, label, code_value), count in expected.items():
        assert value(samples, name, **server, **{label: code_value}) == count, (name, code_value)
    coded = {key for key in server_samples(samples, "device-0000") if len(key[1]) == 3}
    durations = [k for k in coded if k[0].startswith("modbus_farm_request_duration")]
    assert len(coded) - len(durations) == len(expected), "a series counted what was not sent"
    assert (
        value(samples, "modbus_farm_received_bytes_total", **server)
        == 7 * 12 + 3 * 12 + 2 * 12 + 12 + 12 + 12
    )
    assert (
        value(samples, "modbus_farm_sent_bytes_total", **server) == 7 * 13 + 3 * 12 + 2 * 9 + 9 + 9
    )
    assert value(samples, "modbus_farm_connections_accepted_total", **server) == 2
    assert value(samples, "modbus_farm_malformed_frames_total", **server) == 1
    assert value(samples, "modbus_farm_request_duration_seconds_count", **server) == 14
    assert value(samples, "modbus_farm_request_duration_seconds_bucket", **server, le="+Inf") == 14
    total = value(samples, "modbus_farm_request_duration_seconds_sum", **server)
    assert total is not None and 0 < total < 14 * 0.1
    # The bystanders counted nothing, but are listed.
    quiet = {"server": "device-0001", "worker": "1"}
    assert value(samples, "modbus_farm_connections_accepted_total", **quiet) == 0
    assert value(samples, "modbus_farm_request_duration_seconds_count", **quiet) is None
    assert not [
        k for k in server_samples(samples, "device-0001") if k[0] == "modbus_farm_requests_total"
    ]
    assert value(samples, "modbus_farm_servers_desired") == 4
    assert value(samples, "modbus_farm_servers_ready") == 4
    for worker in ("0", "1"):
        assert value(samples, "modbus_farm_worker_up", worker=worker) == 1
        assert value(samples, "modbus_farm_worker_servers", worker=worker) == 2
        assert value(samples, "modbus_farm_worker_restarts_total", worker=worker) == 0
        cpu = value(samples, "modbus_farm_worker_cpu_seconds_total", worker=worker)
        assert cpu is not None and cpu > 0
        rss = value(samples, "modbus_farm_worker_resident_memory_bytes", worker=worker)
        assert rss is not None and rss > 10 * 2**20
    build = [k for k in samples if k[0] == "modbus_farm_build_info"]
    assert len(build) == 1 and ("version", __version__) in build[0][1]


def test_promtool_accepts_a_scrape_under_load(farm: FarmProcess) -> None:
    with loaded(farm, range(3)) as loads:
        wait_for(lambda: all(load.answered > 30 for load in loads), 20, "load on three servers")
        text = scrape_text(farm.api_port)
    lint = subprocess.run(
        [tool("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), (
        lint.stdout + lint.stderr
    )
    samples = parse(text)
    codes = {
        dict(k[1]).get("exception_code") for k in samples if k[0] == "modbus_farm_exceptions_total"
    }
    assert "2" in codes  # the load's reads past the table were counted as exceptions


def test_metrics_port_and_prometheus_config(tmp_path: Path) -> None:
    metrics_port = free_port()
    farm = start_farm(3, workers=1, extra=["--metrics-port", str(metrics_port)])
    try:
        farm.wait_ready()
        alone = parse(scrape_text(metrics_port))
        assert value(alone, "modbus_farm_servers_ready") == 3
        assert value(scrape(farm), "modbus_farm_servers_ready") == 3  # still on the API port
        with pytest.raises(Exception, match="404"):
            scrape_text(metrics_port, "/api/v1/status")
        status = farm.status()
        assert status["metrics_urls"][0] == f"http://{HOST}:{metrics_port}/metrics"
        config = subprocess.run(
            [sys.executable, "-m", "farm", "prometheus-config", "--api-port", str(farm.api_port)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        code, stdout, stderr = farm.stop()
    assert code == 0, stderr
    assert f"metrics  http://{HOST}:{metrics_port}/metrics" in stdout
    assert config.returncode == 0, config.stderr
    assert f"- {HOST}:{metrics_port}" in config.stdout and "scrape_interval: 5s" in config.stdout
    path = tmp_path / "prometheus.yml"
    path.write_text(config.stdout)
    rules = Path(__file__).resolve().parent.parent / "dashboards" / "recording-rules.yml"
    (tmp_path / "recording-rules.yml").write_text(rules.read_text())  # as README says
    check = subprocess.run(
        [tool("promtool"), "check", "config", str(path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def test_busy_metrics_port_is_one_clear_line() -> None:
    blocker = squatter(0)
    farm = make_farm(2, workers=1, extra=["--metrics-port", str(blocker.getsockname()[1])])
    try:
        farm.start()
        assert farm.process is not None
        _, stderr = farm.process.communicate(timeout=30)
    finally:
        blocker.close()
    assert farm.process.returncode not in (0, None)
    assert "--metrics-port" in stderr and "Traceback" not in stderr


def counters(samples: Samples) -> Samples:
    """Every sample that must never go down."""
    return {
        key: v
        for key, v in samples.items()
        if key[0].endswith(("_total", "_bucket", "_count", "_sum"))
    }


def test_counters_survive_kill_9_and_open_connections_reset() -> None:
    farm = start_farm(4, workers=2)
    held = []
    try:
        farm.wait_ready()
        for index in (0, 1):  # one idle connection to a server of each worker
            held.append(socket.create_connection((HOST, farm.port(index)), timeout=5))
        with loaded(farm, range(4)) as loads:
            wait_for(lambda: all(load.answered > 50 for load in loads), 20, "load everywhere")
        zero = {"server": "device-0000", "worker": "0"}
        one = {"server": "device-0001", "worker": "1"}

        def held_only() -> Samples | None:
            samples = scrape(farm)
            return samples if value(samples, "modbus_farm_connections_open", **zero) == 1 else None

        before = wait_for(held_only, 10, "the load's connections to be counted closed")
        fc3 = value(before, "modbus_farm_requests_total", **zero, function_code="3")
        assert fc3 and fc3 > 0
        assert value(before, "modbus_farm_connections_open", **one) == 1
        victim = farm.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: (s := farm.status())["workers"][0]["restarts"] == 1 and s["servers_ready"] == 4,
            15,
            "worker 0 to be replaced",
        )
        after = scrape(farm)
        went_down = {
            key: (v, after.get(key))
            for key, v in counters(before).items()
            if after.get(key) is None or after[key] < v
        }
        assert not went_down, list(went_down.items())[:5]
        assert value(after, "modbus_farm_connections_open", **zero) == 0  # died with worker 0
        assert value(after, "modbus_farm_connections_open", **one) == 1  # worker 1 untouched
        assert value(after, "modbus_farm_worker_restarts_total", worker="0") == 1
        client = ModbusTcpClient(HOST, port=farm.port(0), timeout=3, retries=0)
        assert client.connect()
        for _ in range(5):
            assert not client.read_holding_registers(0, count=1).isError()
        client.close()
        later = scrape(farm)
        assert value(later, "modbus_farm_requests_total", **zero, function_code="3") == fc3 + 5
    finally:
        for sock in held:
            sock.close()
        code, _, stderr = farm.stop()
    assert code == 0, stderr
