"""Faults on a running farm, seen by real Modbus masters (pymodbus's client, mbpoll,
modbus-tk) and by raw sockets where the bytes on the wire are the point."""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import modbus_tk.defines as tk
import pytest
from modbus_tk import modbus_tcp
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse

from farm.client import FarmAPIError, FarmClient, Fleet, Fraction, Glob
from farm.config.faults.spec import pick_fraction
from tests.conftest import start_farm
from tests.farmproc import HOST, FarmProcess, refused, run_together, wait_for
from tests.rawmodbus import closed_by_peer, read_frame
from tests.test_clients import mbap, mbpoll

pytestmark = pytest.mark.timeout(120)
SERVERS = 20


@pytest.fixture(scope="module")
def farm() -> Iterator[FarmProcess]:
    running = start_farm(SERVERS)
    try:
        running.wait_ready()
        yield running
    finally:
        code, _, stderr = running.stop()
        assert code == 0, stderr


@pytest.fixture
def api(farm: FarmProcess) -> Iterator[FarmClient]:
    client = FarmClient.at(HOST, farm.api_port)
    yield client
    client.clear_faults()  # each test leaves the farm without faults
    assert client.faults() == []


def name(index: int) -> str:
    return f"device-{index:04d}"


def connect(farm: FarmProcess, index: int, timeout: float = 3.0) -> ModbusTcpClient:
    client = ModbusTcpClient(HOST, port=farm.port(index), timeout=timeout, retries=0)
    assert client.connect()
    return client


def timed_read(client: ModbusTcpClient) -> float:
    began = time.perf_counter()
    assert not client.read_holding_registers(0, count=2).isError()
    return time.perf_counter() - began


def test_pymodbus_measures_the_added_latency_of_a_delay(farm: FarmProcess, api: FarmClient) -> None:
    client = connect(farm, 3)
    try:
        before = min(timed_read(client) for _ in range(5))
        fault = api.fault("delay", target=name(3), ms=300)
        assert (fault.kind, fault.state, fault.servers) == ("delay", "active", (name(3),))
        slow = [timed_read(client) for _ in range(3)]
        assert all(0.29 <= took - before < 2.0 for took in slow), (before, slow)
        api.clear_fault(fault.id)
        # the best of three: one read may stall on a loaded machine, three in a row would not
        assert min(timed_read(client) for _ in range(3)) < 0.25
    finally:
        client.close()


def test_mbpoll_reports_the_injected_exception(farm: FarmProcess, api: FarmClient) -> None:
    api.fault("exception", target=name(4), code=6)
    busy = mbpoll(farm.port(4), "-r", "1", "-c", "2", "-t", "4", HOST)
    assert busy.returncode != 0 and "busy" in (busy.stdout + busy.stderr).lower(), busy
    api.fault("exception", target=name(5), code=4)
    failure = mbpoll(farm.port(5), "-r", "1", "-t", "4", HOST)
    assert "failure" in (failure.stdout + failure.stderr).lower(), failure
    fine = mbpoll(farm.port(6), "-r", "1", "-t", "4", HOST)  # its neighbour is not faulted
    assert fine.returncode == 0, fine


def exception_code(farm: FarmProcess, index: int) -> int | None:
    client = connect(farm, index)
    try:
        response = client.read_holding_registers(0, count=1)
    finally:
        client.close()
    return response.exception_code if isinstance(response, ExceptionResponse) else None


def test_a_fraction_hits_the_servers_its_seed_picks(farm: FarmProcess, api: FarmClient) -> None:
    everyone = [name(i) for i in range(SERVERS)]
    fault = api.fault("exception", target=Fraction(0.25, seed=7), code=3)
    assert len(fault.servers) == 5
    assert list(fault.servers) == pick_fraction(everyone, 0.25, 7)
    hit = {name(i) for i in range(SERVERS) if exception_code(farm, i) == 3}
    assert hit == set(fault.servers)
    again = api.fault("drop", target=Fraction(0.25, seed=7), duration="1m")
    assert again.servers == fault.servers  # same seed, same servers
    other = api.fault("drop", target=Fraction(0.25, seed=8), duration="1m")
    assert other.servers != fault.servers
    within = api.fault("drop", target=Fraction(0.5, seed=1, of=Glob("device-001*")))
    assert len(within.servers) == 5 and all(s.startswith("device-001") for s in within.servers)
    assert len(api.fault("drop", target=Fleet("default"), duration="1m").servers) == SERVERS


def test_modbus_tk_times_out_on_drop(farm: FarmProcess, api: FarmClient) -> None:
    api.fault("drop", target=name(7))
    master = modbus_tcp.TcpMaster(HOST, farm.port(7), timeout_in_sec=1.0)
    try:
        with pytest.raises(TimeoutError):
            master.execute(1, tk.READ_HOLDING_REGISTERS, 0, 2)
    finally:
        master.close()


def test_drop_answers_nothing_and_keeps_the_connection(farm: FarmProcess, api: FarmClient) -> None:
    fault = api.fault("drop", target=name(2))
    with socket.create_connection((HOST, farm.port(2)), timeout=5) as sock:
        sock.sendall(mbap(1, 1, READ))
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):  # no answer, and no FIN either
            sock.recv(100)
        api.clear_fault(fault.id)
        sock.settimeout(5)
        sock.sendall(mbap(2, 1, READ))  # the same connection serves again
        frames = read_frames(sock, 1)
    assert struct.unpack(">H", frames[0][:2])[0] == 2  # the dropped request stays unanswered


def test_wrong_tid_and_wrong_unit_are_valid_answers_but_for_their_ids(
    farm: FarmProcess, api: FarmClient
) -> None:
    def answer() -> bytes:
        with socket.create_connection((HOST, farm.port(0)), timeout=5) as sock:
            sock.sendall(mbap(0x0102, 1, READ))
            return read_frames(sock, 1)[0]

    right = answer()
    assert right[:2] == b"\x01\x02" and right[6] == 1
    fault = api.fault("wrong_tid", target=name(0))
    wrong = answer()
    assert wrong[:2] != right[:2] and wrong[2:] == right[2:]
    api.clear_fault(fault.id)
    api.fault("wrong_unit", target=name(0))
    wrong = answer()
    assert wrong[6] != 1 and wrong[:6] + wrong[7:] == right[:6] + right[7:]


@pytest.mark.parametrize(
    ("kind", "params"),
    [("wrong_tid", {}), ("garble", {"mode": "random"}), ("garble", {"mode": "truncate"}),
     ("garble", {"mode": "length"}), ("wrong_unit", {})],
)  # fmt: skip
def test_pymodbus_rejects_bad_answers(
    farm: FarmProcess, api: FarmClient, kind: str, params: dict[str, Any]
) -> None:
    api.fault(kind, target=name(8), **params)
    client = connect(farm, 8, timeout=1.0)
    try:
        with pytest.raises(ModbusIOException):
            client.read_holding_registers(0, count=3)
    finally:
        client.close()


def read_frames(sock: socket.socket, count: int) -> list[bytes]:
    data, frames = b"", list[bytes]()
    while len(frames) < count:
        while len(data) < 6 or len(data) < 6 + struct.unpack(">H", data[4:6])[0]:
            chunk = sock.recv(4096)
            assert chunk, f"connection closed after {len(frames)} frames"
            data += chunk
        size = 6 + struct.unpack(">H", data[4:6])[0]
        frames.append(data[:size])
        data = data[size:]
    return frames


READ = bytes([3, 0, 0, 0, 2])


@pytest.mark.parametrize("distribution", ["uniform", "normal"])
def test_delayed_answers_keep_request_order(
    farm: FarmProcess, api: FarmClient, distribution: str
) -> None:
    """Pipelined requests with random delays come back in the order they were asked."""
    api.fault("delay", target=name(9), ms=100, jitter_ms=90, distribution=distribution)
    with socket.create_connection((HOST, farm.port(9)), timeout=5) as sock:
        sock.sendall(b"".join(mbap(tid, 1, READ) for tid in range(1, 21)))
        frames = read_frames(sock, 20)
    assert [struct.unpack(">H", frame[:2])[0] for frame in frames] == list(range(1, 21))


def test_an_answer_held_back_when_the_fault_is_cleared_still_leaves_first(
    farm: FarmProcess, api: FarmClient
) -> None:
    fault = api.fault("delay", target=name(10), ms=500)
    with socket.create_connection((HOST, farm.port(10)), timeout=5) as sock:
        sock.sendall(mbap(1, 1, READ))
        api.clear_fault(fault.id)
        sock.sendall(mbap(2, 1, READ))
        frames = read_frames(sock, 2)
    assert [struct.unpack(">H", frame[:2])[0] for frame in frames] == [1, 2]


def test_slice_sends_an_answer_in_pieces(farm: FarmProcess, api: FarmClient) -> None:
    api.fault("slice", target=name(11), segments=3, gap_ms=150)
    with socket.create_connection((HOST, farm.port(11)), timeout=5) as sock:
        sock.sendall(mbap(1, 1, bytes([3, 0, 0, 0, 10])))
        began, pieces, data = time.monotonic(), [], b""
        while len(data) < 6 + 3 + 20:
            chunk = sock.recv(4096)
            assert chunk
            pieces.append((time.monotonic() - began, chunk))
            data += chunk
    assert len(pieces) == 3, pieces
    assert pieces[-1][0] - pieces[0][0] >= 0.25  # two gaps of 150 ms
    assert data[:2] == b"\x00\x01" and data[7] == 3 and data[8] == 20


def test_disconnect_closes_and_reset_resets(farm: FarmProcess, api: FarmClient) -> None:
    api.fault("disconnect", target=name(12))
    with socket.create_connection((HOST, farm.port(12)), timeout=5) as sock:
        sock.sendall(mbap(1, 1, READ))
        assert sock.recv(100) == b""  # FIN, no answer
    api.fault("reset", target=name(13))
    with socket.create_connection((HOST, farm.port(13)), timeout=5) as sock:
        sock.sendall(mbap(1, 1, READ))
        with pytest.raises(ConnectionResetError):
            sock.recv(100)


def test_faults_narrowed_to_function_codes_addresses_and_units(
    farm: FarmProcess, api: FarmClient
) -> None:
    api.fault(
        "exception",
        target=name(14),
        code=2,
        function_codes=[3],
        addresses={"start": 100, "end": 109},
    )
    client = connect(farm, 14)
    try:
        assert client.read_holding_registers(105, count=1).exception_code == 2
        assert client.read_holding_registers(95, count=6).exception_code == 2  # overlaps 100
        assert not client.read_holding_registers(95, count=5).isError()  # ends at 99
        assert not client.read_input_registers(105, count=1).isError()  # FC 4
        api.clear_faults()
        api.fault("exception", target=name(14), code=2, unit=7)
        assert not client.read_holding_registers(105, count=1, device_id=1).isError()
    finally:
        client.close()


def test_probability_hits_some_requests(farm: FarmProcess, api: FarmClient) -> None:
    api.fault("exception", target=name(15), code=6, probability=0.5)
    client = connect(farm, 15)
    try:
        codes = [client.read_holding_registers(0, count=1).isError() for _ in range(200)]
    finally:
        client.close()
    assert 60 <= sum(codes) <= 140, sum(codes)  # binomial(200, 0.5): 100 +- 5 sd


def metric(farm: FarmProcess, series: str) -> float:
    text = metrics_text(farm)
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def metrics_text(farm: FarmProcess) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://{HOST}:{farm.api_port}/metrics", timeout=10) as got:
        return str(got.read().decode())


def test_metrics_count_injections_and_active_faults(farm: FarmProcess, api: FarmClient) -> None:
    series = (
        f'modbus_farm_fault_injections_total{{server="{name(16)}",worker="0",kind="exception"}}'
    )
    before = metric(farm, series)
    fault = api.fault("exception", target=name(16), code=6, function_codes=[3])
    assert metric(farm, 'modbus_farm_faults_active{kind="exception"}') == 1
    client = connect(farm, 16)
    try:
        for _ in range(7):
            assert client.read_holding_registers(0, count=1).exception_code == 6
        assert not client.read_input_registers(0, count=1).isError()  # not injected
    finally:
        client.close()
    assert metric(farm, series) - before == 7
    api.clear_fault(fault.id)
    assert metric(farm, 'modbus_farm_faults_active{kind="exception"}') == 0


def test_a_fault_starts_late_and_expires(farm: FarmProcess, api: FarmClient) -> None:
    """Not in effect before its start (4 s away: room for a loaded machine between the call
    and the check), in effect after, and gone once its second is over."""
    asked = time.monotonic()
    fault = api.fault("exception", target=name(17), code=6, start_in="4s", duration="1s")
    assert fault.state == "scheduled" and fault.starts_in_s > 0
    assert exception_code(farm, 17) is None  # not yet
    assert time.monotonic() - asked < 4.0, "checked too late to tell"
    wait_for(lambda: exception_code(farm, 17) == 6, 15, "the fault to start")
    wait_for(lambda: api.faults() == [], 15, "the fault to expire")
    assert exception_code(farm, 17) is None


def held_connection(farm: FarmProcess, index: int) -> socket.socket:
    """A raw connection to the server, with one request answered on it."""
    sock = socket.create_connection((HOST, farm.port(index)), timeout=5)
    sock.sendall(mbap(1, 1, b"\x03\x00\x00\x00\x01"))
    assert read_frame(sock)[7] == 3
    return sock


def test_offline_refuses_connections_then_serves_the_same_values(
    farm: FarmProcess, api: FarmClient
) -> None:
    client = connect(farm, 18)
    try:
        assert not client.write_registers(10, [1234, 5678]).isError()
    finally:
        client.close()
    held = held_connection(farm, 18)
    try:
        # 5 s offline: the checks below have that long on a loaded machine.
        fault = api.fault("offline", target=name(18), duration="5s")
        assert fault.state == "active"  # as the call answered
        assert refused(farm.port(18))  # in effect when the call returns
        assert closed_by_peer(held, 5.0) is not None  # the open connection was dropped
        assert api.server(name(18)).info.state == "offline"
        wait_for(lambda: not refused(farm.port(18)), 20, "the server to come back")
        assert api.faults() == []  # expired (the table keeps no ended fault)
    finally:
        held.close()
    client = connect(farm, 18)
    try:
        assert client.read_holding_registers(10, count=2).registers == [1234, 5678]
    finally:
        client.close()
    assert (
        metric(
            farm,
            f'modbus_farm_fault_injections_total{{server="{name(18)}",worker="0",kind="offline"}}',
        )
        == 1
    )


def test_reboot_comes_back_with_starting_values(farm: FarmProcess, api: FarmClient) -> None:
    client = connect(farm, 19)
    try:
        assert not client.write_registers(10, [4321]).isError()
        api.write(name(19), "input_registers", 0, [5000])  # the uptime counter carries on
        wait_for(
            lambda: client.read_input_registers(0, count=1).registers[0] > 5000,
            10,
            "uptime to count",
        )
    finally:
        client.close()
    held = held_connection(farm, 19)
    try:
        # 5 s down: the checks below have that long on a loaded machine (with 1 s, a late
        # read could land after the reboot).
        api.fault("reboot", target=name(19), duration="5s")
        assert refused(farm.port(19))
        assert closed_by_peer(held, 5.0) is not None  # the open connection was dropped
    finally:
        held.close()
    wait_for(lambda: not refused(farm.port(19)), 20, "the server to come back")
    client = connect(farm, 19)
    try:
        assert client.read_holding_registers(10, count=1).registers == [0]
        assert client.read_input_registers(0, count=1).registers[0] < 100  # again from 0
    finally:
        client.close()


def test_bad_faults_are_refused_naming_the_field(farm: FarmProcess, api: FarmClient) -> None:
    cases = [
        ({"kind": "exception", "target": {"servers": [name(1)]}}, 422, "code: required"),
        (
            {"kind": "delay", "ms": 3, "target": {"servers": ["nope"]}},
            422,
            "target.servers: no server",
        ),
        ({"kind": "delay", "ms": 3, "target": {"fleet": "nope"}}, 422, "target.fleet: no fleet"),
        ({"kind": "delay", "ms": 3, "target": {"glob": "x*"}}, 422, "target: matches no server"),
        ({"kind": "hum", "target": {"servers": [name(1)]}}, 422, "kind: 'hum' is not"),
    ]
    for body, status, words in cases:
        with pytest.raises(FarmAPIError) as refused:
            api.request("POST", "/api/v1/faults", body)
        assert refused.value.status == status and words in str(refused.value), refused.value
    for method, path in (("GET", "/api/v1/faults/99"), ("DELETE", "/api/v1/faults/99")):
        with pytest.raises(FarmAPIError) as missing:
            api.request(method, path)
        assert missing.value.status == 404 and "no fault 99" in str(missing.value)
    with pytest.raises(FarmAPIError) as malformed:
        api.request("DELETE", "/api/v1/faults/x")
    assert malformed.value.status == 422 and "'id'" in str(malformed.value)
    assert api.faults() == []  # nothing changed


def farm_command(farm: FarmProcess, *args: str) -> list[str]:
    return [sys.executable, "-m", "farm", *args, "--api-port", str(farm.api_port)]


def farm_cli(farm: FarmProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(farm_command(farm, *args), capture_output=True, text=True, timeout=30)


def farm_clis(farm: FarmProcess, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Commands that do not depend on one another, run at once (tests.farmproc.run_together)."""
    return run_together([farm_command(farm, *args) for args in commands], timeout=30)


def test_the_cli_forms_of_the_issue(farm: FarmProcess, api: FarmClient) -> None:
    delay, exception = farm_clis(
        farm,
        ["fault", "add", "delay", "--ms", "300", "--target", name(3)],
        ["fault", "add", "exception", "--code", "6", "--target", name(4)],
    )
    assert delay.returncode == 0 and "delay ms=300 on device-0003" in delay.stdout, delay
    assert exception.returncode == 0, exception
    shown, *spread = farm_clis(
        farm,
        ["get", name(3)],  # the server's detail lists its faults
        ["fault", "add", "delay", "--ms", "300", "--fleet", "default"],
        ["fault", "add", "delay", "--ms", "300", "--glob", "device-001*"],
        ["fault", "add", "delay", "--ms", "300", "--fraction", "0.1", "--seed", "7"],
    )
    assert re.search(r"^fault \d+: delay ms=300 on device-0003, active", shown.stdout, re.M), shown
    assert [done.returncode for done in spread] == [0, 0, 0], spread
    # Alone, each: the check of the 2 s fault, the list of the one 10 s away, come right after.
    added = farm_cli(farm, "fault", "add", "offline", "--target", name(5), "--for", "2s")
    assert added.returncode == 0 and "offline on device-0005, active, ends in" in added.stdout
    assert refused(farm.port(5))
    later = farm_cli(
        farm, "fault", "add", "drop", "--target", name(1), "--in", "10s", "--probability", "0.2"
    )
    assert later.returncode == 0 and "starts in" in later.stdout, later
    listed = farm_cli(farm, "fault", "list")
    assert listed.returncode == 0 and "exception" in listed.stdout and "scheduled" in listed.stdout
    wait_for(lambda: not refused(farm.port(5)), 15, "the 2 s offline fault to end")
    assert len(api.faults()) == 6
    first = api.faults()[0].id
    assert farm_cli(farm, "fault", "clear", str(first)).returncode == 0
    assert len(api.faults()) == 5
    unclears: tuple[list[str], ...] = ([], [str(first), "--all"])  # no id nor --all; both
    unclear_done = farm_clis(farm, *[["fault", "clear", *unclear] for unclear in unclears])
    for unclear, done in zip(unclears, unclear_done, strict=True):
        assert done.returncode != 0 and done.stderr.count("\n") == 1, done
        assert "--all" in done.stderr and ("not both" in done.stderr) == bool(unclear), done
    cleared = farm_cli(farm, "fault", "clear", "--all")
    assert cleared.returncode == 0 and "cleared 5 faults" in cleared.stdout
    assert api.faults() == []
    bad = farm_cli(farm, "fault", "add", "exception", "--code", "12", "--target", name(4))
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "code:" in bad.stderr, bad
    assert api.faults() == []
