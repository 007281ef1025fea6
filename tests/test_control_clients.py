"""Values and stop/start through the API and the CLI, checked by real Modbus masters.

mbpoll reads what the API and `farm set` wrote; pymodbus's client decodes typed points the
API encoded, is refused by a stopped server, and served again after a start, across a kill -9
of the server's worker too.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ConnectionException

from farm.client import FarmClient, Fleet
from tests.conftest import config_farm, ready_farm
from tests.farmproc import HOST, FarmProcess, refused, run_together, squatter, wait_for
from tests.test_control_api import SERVERS, TOKEN, config
from tests.tools import tool


@pytest.fixture(scope="module")
def farm() -> Iterator[FarmProcess]:
    with config_farm(config, SERVERS, ["--api-token", TOKEN]) as running:
        yield running


def api(farm: FarmProcess) -> FarmClient:
    return FarmClient.at(HOST, farm.api_port, TOKEN)


CLI_ENV = {**os.environ, "FARM_API_TOKEN": TOKEN}


def cli_command(farm: FarmProcess, *args: str) -> list[str]:
    return [sys.executable, "-m", "farm", *args, "--api-port", str(farm.api_port)]


def cli(farm: FarmProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(farm, *args), capture_output=True, text=True, timeout=60, env=CLI_ENV
    )


def mbpoll(port: int, *args: str) -> str:
    """Debian's mbpoll, PDU addressing (-0: references from 0), one poll."""
    command = [tool("mbpoll"), "-m", "tcp", "-a", "1", "-0", "-1", "-p", str(port), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def pymodbus(farm: FarmProcess, index: int) -> ModbusTcpClient:
    client = ModbusTcpClient(HOST, port=farm.port(index), timeout=3, retries=0)
    assert client.connect()
    return client


def test_api_write_is_read_by_mbpoll(farm: FarmProcess) -> None:
    assert api(farm).write("meter-01", "holding_registers", 40, [1234, 5678]) == [1234, 5678]
    assert "[40]: \t1234" in (out := mbpoll(farm.port(1), "-t", "4", "-r", "40", "-c", "2", HOST))
    assert "[41]: \t5678" in out
    api(farm).write("meter-01", "discrete_inputs", 3, [1, 0, 1])  # a table clients cannot write
    out = mbpoll(farm.port(1), "-t", "1", "-r", "3", "-c", "3", HOST)
    assert "[3]: \t1" in out and "[4]: \t0" in out and "[5]: \t1" in out


def test_cli_set_is_read_by_mbpoll_and_get_reads_it(farm: FarmProcess) -> None:
    done = cli(farm, "set", "meter-02", "holding_registers:10=1234,5678")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "holding_registers:10 = 1234",
        "holding_registers:11 = 5678",
    ]
    out = mbpoll(farm.port(2), "-t", "4", "-r", "10", "-c", "2", HOST)
    assert "[10]: \t1234" in out and "[11]: \t5678" in out
    done = cli(farm, "get", "meter-02", "holding_registers:10:2")
    assert done.stdout.splitlines() == [
        "holding_registers:10 = 1234",
        "holding_registers:11 = 5678",
    ]
    done = cli(farm, "set", "meter-02", "co:4=1,true,0", "pump=1")
    assert done.returncode == 0, done.stderr
    out = mbpoll(farm.port(2), "-t", "0", "-r", "0", "-c", "7", HOST)
    for address, bit in ((0, 1), (4, 1), (5, 1), (6, 0)):
        assert f"[{address}]: \t{bit}" in out


def test_point_writes_are_encoded_for_pymodbus(farm: FarmProcess) -> None:
    client = api(farm)
    assert client.set_point("meter-03", "voltage", 231.25).value == 231.25
    assert client.set_point("meter-03", "energy", -1234.5).value == pytest.approx(-1234.5)
    assert client.set_point("meter-03", "level", -300).value == -300  # read-only to clients
    assert client.set_point("meter-03", "label", "xy").value == "xy"
    modbus = pymodbus(farm, 3)
    try:
        words = modbus.read_holding_registers(0, count=4, device_id=1).registers
        voltage = modbus.convert_from_registers(
            words[0:2], modbus.DATATYPE.FLOAT32, word_order="little"
        )
        assert voltage == 231.25
        # int32 with scale 0.1, bytes swapped inside each register (BADC)
        swapped = b"".join(struct.pack("<H", word) for word in words[2:4])
        assert struct.unpack(">i", swapped)[0] == -12345
        level = modbus.read_input_registers(0, count=1, device_id=1).registers
        assert modbus.convert_from_registers(level, modbus.DATATYPE.INT16) == -300
        label = modbus.read_holding_registers(10, count=2, device_id=1).registers
        text = modbus.convert_from_registers(label, modbus.DATATYPE.STRING)
        assert isinstance(text, str) and text.rstrip("\0") == "xy"
    finally:
        modbus.close()
    assert cli(farm, "get", "meter-03", "energy").stdout.strip() == "energy = -1234.5"


def test_a_counter_and_a_random_walk_carry_on_from_a_write() -> None:
    farm = ready_farm(2, workers=1)
    try:
        client = FarmClient.at(HOST, farm.api_port)
        assert client.set_point("device-0001", "uptime_s", 5000).value == 5000
        # pressure_mbar walks 950-1050 in steps of 2 from 1000: write it 40 away from there.
        where = int(client.point("device-0001", "pressure_mbar").value)
        walk_from = 960 if where >= 1000 else 1040
        assert client.set_point("device-0001", "pressure_mbar", walk_from).value == walk_from
        modbus = pymodbus(farm, 1)
        try:

            def counted_on() -> bool:
                value = modbus.read_input_registers(0, count=1, device_id=1).registers[0]
                assert 5000 <= value < 5100  # from the write, not from where it was
                return value > 5001

            def walked_on() -> bool:
                value = modbus.read_input_registers(3, count=1, device_id=1).registers[0]
                assert abs(value - walk_from) < 20, value  # from the write (2 a step)
                return value != walk_from

            wait_for(counted_on, 30, "the counter to count on from 5000")
            wait_for(walked_on, 30, f"the random walk to walk on from {walk_from}")
        finally:
            modbus.close()
    finally:
        code, _, stderr = farm.stop()
        assert code == 0, stderr


def test_stop_refuses_connections_and_start_serves_the_same_values(farm: FarmProcess) -> None:
    client = api(farm)
    client.write("plc-01", "holding_registers", 60, [4242])
    modbus = pymodbus(farm, 5)
    try:
        assert modbus.read_holding_registers(60, count=1, device_id=1).registers == [4242]
        assert client.server("plc-01").connections == 1
        done = cli(farm, "server", "stop", "plc-01")
        assert done.returncode == 0 and done.stdout.strip() == "plc-01 stopped", done.stderr
        assert refused(farm.port(5), timeout=3)
        with pytest.raises(ConnectionException):  # the open connection was dropped
            modbus.read_holding_registers(60, count=1, device_id=1)
    finally:
        modbus.close()
    assert not ModbusTcpClient(HOST, port=farm.port(5), timeout=2, retries=0).connect()
    assert [s.name for s in client.servers(state="offline")] == ["plc-01"]
    assert client.server("plc-01").info.stopped
    wait_for(lambda: client.server("plc-01").connections == 0, 10, "the connection counted closed")
    assert cli(farm, "server", "stop", "plc-01").stdout.strip() == "plc-01 was already stopped"
    client.write("plc-01", "holding_registers", 61, [99])  # values can change while offline
    done = cli(farm, "server", "start", "plc-01")
    assert done.returncode == 0 and done.stdout.strip() == "plc-01 started", done.stderr
    modbus = pymodbus(farm, 5)
    try:
        assert modbus.read_holding_registers(60, count=2, device_id=1).registers == [4242, 99]
    finally:
        modbus.close()
    assert client.server("plc-01").info.state == "up"


def test_server_stop_and_start_take_several_names(farm: FarmProcess) -> None:
    done = cli(farm, "server", "stop", "meter-02", "meter-03")
    assert done.stdout.splitlines() == ["meter-02 stopped", "meter-03 stopped"], done.stderr
    assert refused(farm.port(2), timeout=3) and refused(farm.port(3), timeout=3)
    assert [s.name for s in api(farm).servers(state="offline")] == ["meter-02", "meter-03"]
    done = cli(farm, "server", "start", "meter-02", "meter-03")
    assert done.stdout.splitlines() == ["meter-02 started", "meter-03 started"], done.stderr
    assert api(farm).servers(state="offline") == []


def test_a_stopped_server_keeps_its_port_and_comes_back_on_it(farm: FarmProcess) -> None:
    """Stopped, its port refuses connections and no other program can take it (a bound,
    non-listening socket holds it: on the old code another listener, or an outgoing
    connection's ephemeral port, could, and the server could not come back)."""
    client = api(farm)
    client.stop("meter-00")
    assert refused(farm.port(0))
    with pytest.raises(OSError):
        squatter(farm.port(0)).close()  # SO_REUSEADDR and all: the port is held
    plain = socket.socket()
    with plain, pytest.raises(OSError):
        plain.bind((HOST, farm.port(0)))
    assert client.start("meter-00").changed
    assert client.server("meter-00").info.error is None
    modbus = pymodbus(farm, 0)
    modbus.close()


def test_a_stopped_server_stays_stopped_when_its_worker_is_killed() -> None:
    farm = ready_farm(4, workers=2)
    try:
        client = FarmClient.at(HOST, farm.api_port)
        client.write("device-0001", "holding_registers", 40, [1234, 5678])
        # The issue's own command lines, exactly as written:
        script = (
            f"alias farm='{sys.executable} -m farm'; p='--api-port {farm.api_port}'\n"
            "farm set device-0001 holding_registers:10=1234,5678 $p\n"
            "farm get device-0001 holding_registers:10:2 $p\n"
            "farm server stop device-0003 $p && farm server start device-0003 $p\n"
        )
        done = subprocess.run(
            ["bash", "-O", "expand_aliases", "-ec", script],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-4:] == [
            "holding_registers:10 = 1234",
            "holding_registers:11 = 5678",
            "device-0003 stopped",
            "device-0003 started",
        ]
        assert client.stop("device-0001").changed
        worker = client.server("device-0001").info.worker
        row = farm.status()["workers"][worker]
        os.kill(row["pid"], signal.SIGKILL)

        def replaced() -> bool:
            now = farm.status()["workers"][worker]
            return bool(now["restarts"] > row["restarts"] and now["state"] == "ready")

        wait_for(replaced, 60, "the worker to be replaced")
        assert refused(farm.port(1), timeout=3)
        assert [s.name for s in client.servers(state="offline")] == ["device-0001"]
        assert client.ready()  # stopped on purpose: the farm is still ready for probes
        status = farm.status()
        assert (status["servers_ready"], status["servers_stopped"], status["ready"]) == (3, 1, True)
        shown = cli(farm, "status").stdout
        assert "servers ready 3 / 4 (1 stopped)" in shown, shown
        assert client.start("device-0001").up
        assert farm.status()["servers_ready"] == 4
        out = mbpoll(farm.port(1), "-t", "4", "-r", "40", "-c", "2", HOST)
        assert "[40]: \t1234" in out and "[41]: \t5678" in out
    finally:
        code, _, stderr = farm.stop()
        assert code == 0, stderr


def test_the_python_client_form_of_the_issue(farm: FarmProcess) -> None:
    client = FarmClient(f"http://{HOST}:{farm.api_port}", token=TOKEN)
    fault = client.fault("delay", target=Fleet("meters"), ms=800, duration="30s")
    try:
        assert fault.servers == ("meter-00", "meter-01", "meter-02", "meter-03")
        assert fault.ends_in_s is not None and 20 < fault.ends_in_s <= 30
        modbus = pymodbus(farm, 1)
        try:
            began = time.perf_counter()
            assert not modbus.read_holding_registers(0, count=2, device_id=1).isError()
            assert time.perf_counter() - began >= 0.79
        finally:
            modbus.close()
        assert client.server("meter-01").info.state == "faulted"
        assert client.server("plc-00").info.state == "up"  # another fleet
    finally:
        client.clear_fault(fault.id)
    assert client.faults() == []


def test_fault_commands_take_the_token_from_the_option_or_the_environment(
    farm: FarmProcess,
) -> None:
    bare = {key: value for key, value in os.environ.items() if key != "FARM_API_TOKEN"}
    add = [sys.executable, "-m", "farm", "fault", "add", "exception", "--code", "6"]
    add += ["--target", "meter-00", "--api-port", str(farm.api_port)]
    for done in run_together([add, [*add, "--api-token", "wrong"]], env=bare):  # both refused
        assert done.returncode != 0 and done.stderr.count("\n") == 1, done
        assert "401" in done.stderr and "--api-token or FARM_API_TOKEN" in done.stderr, done
    assert api(farm).faults() == []  # nothing changed
    done = subprocess.run(
        [*add, "--api-token", TOKEN], capture_output=True, text=True, timeout=60, env=bare
    )
    assert done.returncode == 0 and "exception code=6 on meter-00" in done.stdout, done
    done = cli(farm, "fault", "clear", "--all")  # FARM_API_TOKEN in its environment
    assert done.returncode == 0 and done.stdout.strip() == "cleared 1 fault", done
    assert api(farm).faults() == []


def test_cli_errors_are_one_line(farm: FarmProcess) -> None:
    errors = (
        (("get", "nope"), "no server named 'nope'"),
        (("get", "meter-00", "coils:99"), "'address'"),
        (("set", "meter-00", "holding_registers:1=70000"), "0-65535"),
        (("set", "meter-00", "voltage"), "POINT=VALUE"),
        (("server", "start", "nope"), "no server named 'nope'"),
    )
    commands = [cli_command(farm, *args) for args, _ in errors]  # none changes anything
    for (args, message), done in zip(errors, run_together(commands, env=CLI_ENV), strict=True):
        assert done.returncode != 0, args
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, done.stderr)


def test_cli_lists_servers(farm: FarmProcess) -> None:
    done, nothing = run_together(
        [
            cli_command(farm, "servers", "--fleet", "plcs"),
            cli_command(farm, "servers", "--name", "no-such-*"),
        ],
        env=CLI_ENV,
    )
    assert done.returncode == 0, done.stderr
    assert "plc-00" in done.stdout and "plc-01" in done.stdout and "meter-00" not in done.stdout
    assert done.stdout.strip().endswith("2 servers")
    assert nothing.returncode == 0, nothing.stderr
    assert nothing.stdout.strip() == "no servers match", nothing.stdout
