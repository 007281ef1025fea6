"""Every transport against real peers: pymodbus's RTU framer over TCP, its UDP and TLS
clients, mbpoll in RTU mode through a socat pty, nmap's modbus-discover, and farm bench.

One farm serves a fleet of each transport from one config file (certificates from
`farm certs`); a second, small farm is killed to show that diagnostics survive a restart.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymodbus import FramerType
from pymodbus.client import ModbusTcpClient, ModbusTlsClient, ModbusUdpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu.file_message import FileRecord

from farm.cli.selfsigned import make_certificates
from farm.client import FarmClient
from farm.modbus import rtu
from farm.worker.transports.tls import role_of
from tests.farmproc import HOST, FarmProcess, free_port, free_port_range, wait_for
from tests.prometheus_server import scrape, value
from tests.tools import tool

pytestmark = pytest.mark.timeout(180)
FLEETS = ("plain", "plain", "serial", "datagram", "secure")  # server i's fleet, by port


def farm_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farm", *args], capture_output=True, text=True, timeout=60
    )


def config(port_base: int, certs: str) -> dict[str, object]:
    template = {
        "identity": {"server_id": 0x4D, "vendor_name": "ACME", "product_code": "M-4"},
        "exception_status_coil": 10,
        "units": [
            {"unit_id": 1, "coils": 100, "discrete_inputs": 10, "holding_registers": 1300},
            {"unit_id": 2, "holding_registers": 10},
        ],
        "files": [{"number": 4, "records": 10, "values": [0, 0x0DFE, 0x0020]}],
        "fifos": [{"address": 0x04DE, "values": [0x01B8, 0x1284]}],
    }

    def fleet(name: str, offset: int, count: int = 1, **extra: object) -> dict[str, object]:
        return {
            "name": name,
            "template": "meter",
            "count": count,
            "name_pattern": name + "-{i}",
            "addressing": {"host": HOST, "port_start": port_base + offset},
            **extra,
        }

    tls = {"certificate": f"{certs}/server.pem", "key": f"{certs}/server.key"}
    return {
        "templates": {"meter": template},
        "fleets": [
            fleet("plain", 0, count=2),
            fleet("serial", 2, transport="rtu-over-tcp"),
            fleet("datagram", 3, transport="udp"),
            fleet("secure", 4, transport="tls", tls={**tls, "client_ca": f"{certs}/ca.pem"}),
        ],
    }


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    done = farm_command("certs", str(directory), "--role", "operator")
    assert done.returncode == 0, done.stderr
    return directory


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[FarmProcess]:
    port_base = free_port_range(len(FLEETS))
    api_port = free_port()
    path = tmp_path_factory.mktemp("config") / "transports.yaml"
    path.write_text(yaml.safe_dump(config(port_base, str(certs))))
    running = FarmProcess(
        count=len(FLEETS), workers=2, port_base=port_base, api_port=api_port, file=str(path)
    ).start()
    try:
        running.wait_ready()
        yield running
    finally:
        code, _, stderr = running.stop()
        assert code == 0, stderr


def metric(farm: FarmProcess, name: str, **labels: str) -> float | None:
    return value(scrape(farm), name, **labels)


def server(farm: FarmProcess, index: int) -> dict[str, str]:
    """The labels of the farm's `index`-th server."""
    number = {0: 0, 1: 1}.get(index, 0)
    workers = {s["name"]: str(s["worker"]) for s in farm.api("/api/v1/servers")["servers"]}
    name = f"{FLEETS[index]}-{number}"
    return {"server": name, "worker": workers[name]}


# -- RTU over TCP -------------------------------------------------------------------------


def test_pymodbus_rtu_framer_over_tcp(farm: FarmProcess) -> None:
    # Any: pymodbus types every response as its base class ModbusPDU.
    client: Any = ModbusTcpClient(
        HOST, port=farm.port(2), framer=FramerType.RTU, timeout=1.5, retries=0
    )
    assert client.connect()
    try:
        assert not client.write_registers(5, [1, 2, 3], device_id=1).isError()
        assert client.read_holding_registers(5, count=3, device_id=1).registers == [1, 2, 3]
        # (FC 24 is read over UDP below: pymodbus's RTU framer sizes its answer 2 bytes short.)
        assert client.diag_query_data(b"\xa5\x37", device_id=1).message == b"\xa5\x37"
        assert not client.write_coils(10, [True, False, True, True], device_id=1).isError()
        assert client.read_exception_status(device_id=1).status == 0b1101
        # The farm answers server id 4D, run indicator FF, then its name (spec 6.13); pymodbus
        # reads the last byte as the run indicator, and the rest as the identifier.
        identity = client.report_device_id(device_id=1)
        assert identity.identifier == b"\x4d\xffserial-"
        with pytest.raises(ModbusIOException):  # no such unit on the line: silence
            client.read_holding_registers(0, count=1, device_id=9)
    finally:
        client.close()


def rtu_exchange(sock: socket.socket, frames: bytes, answers: int) -> list[bytes]:
    sock.sendall(frames)
    data, found = b"", list[bytes]()
    deadline = time.monotonic() + 5
    while len(found) < answers:
        length = rtu.response_length(data, 0) if len(data) >= 3 else rtu.NEED_MORE
        if length > 0 and len(data) >= length:
            found.append(data[:length])
            data = data[length:]
            continue
        assert time.monotonic() < deadline, f"{len(found)} of {answers} answers"
        chunk = sock.recv(4096)
        assert chunk, "the farm closed the connection"
        data += chunk
    return found


def test_rtu_bad_crc_is_ignored_and_counted(farm: FarmProcess) -> None:
    labels = server(farm, 2)
    before = metric(farm, "modbus_farm_crc_errors_total", **labels) or 0
    with socket.create_connection((HOST, farm.port(2)), timeout=5) as sock:
        bad = bytearray(rtu.frame(1, bytes.fromhex("03 0000 0001")))
        bad[-1] ^= 0xFF
        sock.sendall(bytes(bad))
        sock.settimeout(0.5)  # a serial device stays silent: nothing may come back
        with pytest.raises(TimeoutError):
            sock.recv(100)
        sock.settimeout(5)
        # Pipelined: two frames in one write, two answers in order.
        two = rtu.frame(1, bytes.fromhex("06 0000 0063")) + rtu.frame(
            1, bytes.fromhex("08 000c 0000")
        )
        write, errors = rtu_exchange(sock, two, 2)
    assert write == rtu.frame(1, bytes.fromhex("06 0000 0063"))
    assert errors[:4] == bytes.fromhex("01 08 00 0c")
    assert struct.unpack(">H", errors[4:6])[0] >= 1  # FC 08/0C: the bad frame, counted
    assert metric(farm, "modbus_farm_crc_errors_total", **labels) == before + 1


def test_faults_on_rtu_over_tcp(farm: FarmProcess) -> None:
    """A garble fault leaves an RTU answer whose CRC does not match; an exception fault
    answers a proper RTU exception frame."""
    client = FarmClient.at(HOST, farm.api_port)
    request = rtu.frame(1, bytes.fromhex("03 0000 0001"))
    garble = client.fault("garble", "serial-0", mode="random")
    try:
        with socket.create_connection((HOST, farm.port(2)), timeout=5) as sock:
            sock.sendall(request)
            answer = b""
            while len(answer) < 7:  # as long as the true answer (its byte count is garbled)
                chunk = sock.recv(100)
                assert chunk, "the farm closed the connection"
                answer += chunk
        assert answer[:2] == b"\x01\x03" and not rtu.crc_ok(answer, 0, len(answer))
    finally:
        client.clear_fault(garble.id)
    failing = client.fault("exception", "serial-0", code=6)
    try:
        with socket.create_connection((HOST, farm.port(2)), timeout=5) as sock:
            (answer,) = rtu_exchange(sock, request, 1)
        assert answer == rtu.frame(1, bytes.fromhex("83 06"))
    finally:
        client.clear_fault(failing.id)
    with socket.create_connection((HOST, farm.port(2)), timeout=5) as sock:
        (answer,) = rtu_exchange(sock, request, 1)
    assert answer[:3] == bytes.fromhex("01 03 02") and rtu.crc_ok(answer, 0, len(answer))


def test_mbpoll_in_rtu_mode_through_a_socat_pty(farm: FarmProcess, tmp_path: Path) -> None:
    tty = tmp_path / "ttyFARM"
    bridge = subprocess.Popen(
        [tool("socat"), f"pty,link={tty},raw,echo=0", f"tcp:{HOST}:{farm.port(2)}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(tty.exists, 10, "socat's pty")
        base = [tool("mbpoll"), "-m", "rtu", "-b", "19200", "-P", "none", "-a", "1", "-1"]
        wrote = subprocess.run(
            [*base, "-t", "4", "-r", "21", str(tty), "4321"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert wrote.returncode == 0, wrote.stdout + wrote.stderr
        read = subprocess.run(
            [*base, "-t", "4", "-r", "21", "-c", "1", str(tty)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert read.returncode == 0, read.stdout + read.stderr
        assert "[21]: \t4321" in read.stdout
    finally:
        bridge.terminate()
        bridge.wait(10)


# -- UDP ------------------------------------------------------------------------------------


def test_pymodbus_udp_client(farm: FarmProcess) -> None:
    client: Any = ModbusUdpClient(HOST, port=farm.port(3), timeout=3, retries=1)
    assert client.connect()
    try:
        assert not client.write_register(7, 777, device_id=1).isError()
        assert client.read_holding_registers(7, count=1, device_id=1).registers == [777]
        assert client.diag_read_bus_message_count(device_id=1).message >= 3
        assert client.read_fifo_queue(address=0x04DE, device_id=1).values == [0x01B8, 0x1284]
        records = client.read_file_record(
            # pymodbus's record_length counts bytes, not records
            [FileRecord(file_number=4, record_number=1, record_length=4)],
            device_id=1,
        )
        assert records.records[0].record_data == bytes.fromhex("0dfe0020")
    finally:
        client.close()


def test_udp_malformed_datagram_is_dropped_and_counted(farm: FarmProcess) -> None:
    labels = server(farm, 3)
    before = metric(farm, "modbus_farm_malformed_frames_total", **labels) or 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        sock.sendto(
            struct.pack(">HHHB", 1, 0, 99, 1) + b"\x03\x00\x00\x00\x01", (HOST, farm.port(3))
        )
        with pytest.raises(TimeoutError):
            sock.recv(100)
        sock.settimeout(5)
        sock.sendto(
            struct.pack(">HHHB", 2, 0, 6, 1) + b"\x03\x00\x07\x00\x01", (HOST, farm.port(3))
        )
        answer = sock.recv(100)
    assert answer[:2] == b"\x00\x02" and answer[7] == 3
    assert metric(farm, "modbus_farm_malformed_frames_total", **labels) == before + 1


def test_faults_on_udp(farm: FarmProcess) -> None:
    """Answer-level faults reach datagrams too: an exception, a wrong transaction id."""
    client = FarmClient.at(HOST, farm.api_port)
    request = struct.pack(">HHHB", 0x0102, 0, 6, 1) + bytes.fromhex("03 0000 0001")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        for kind, params, expected in (
            ("exception", {"code": 6}, struct.pack(">HHHB", 0x0102, 0, 3, 1) + b"\x83\x06"),
            ("wrong_tid", {}, struct.pack(">HHHB", 0x8102, 0, 5, 1) + b"\x03\x02"),
        ):
            fault = client.fault(kind, "datagram-0", **params)
            try:
                sock.sendto(request, (HOST, farm.port(3)))
                assert sock.recv(100)[: len(expected)] == expected, kind
            finally:
                client.clear_fault(fault.id)


# -- TLS ------------------------------------------------------------------------------------


def tls_client(farm: FarmProcess, certs: Path, certificate: Path | None) -> ModbusTlsClient:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # pymodbus's sync client passes no server name
    context.load_verify_locations(certs / "ca.pem")
    if certificate is not None:
        context.load_cert_chain(certificate / "client.pem", certificate / "client.key")
    return ModbusTlsClient(HOST, port=farm.port(4), sslctx=context, timeout=3, retries=0)


def test_tls_client_with_a_certificate_and_its_role(farm: FarmProcess, certs: Path) -> None:
    client = tls_client(farm, certs, certs)
    assert client.connect()
    try:
        assert not client.write_register(3, 33, device_id=1).isError()
        assert client.read_holding_registers(3, count=1, device_id=1).registers == [33]
    finally:
        client.close()
    worker = server(farm, 4)["worker"]
    sessions = wait_for(
        lambda: metric(farm, "modbus_farm_tls_sessions_total", worker=worker, role="operator"),
        10,
        "the session to be counted under its role",
    )
    assert sessions >= 1


def test_faults_match_the_tls_clients_role(farm: FarmProcess, certs: Path) -> None:
    """A fault narrowed to a role acts on that role's requests only."""
    api = FarmClient.at(HOST, farm.api_port)
    client: Any = tls_client(farm, certs, certs)  # its certificate names "operator"
    assert client.connect()
    try:
        for role, fails in (("operator", True), ("engineer", False)):
            fault = api.fault("exception", "secure-0", code=6, role=role)
            try:
                answer = client.read_holding_registers(3, count=1, device_id=1)
                assert answer.isError() == fails, role
                assert not fails or answer.exception_code == 6
            finally:
                api.clear_fault(fault.id)
    finally:
        client.close()


def test_tls_client_without_an_accepted_certificate_is_refused(
    farm: FarmProcess, certs: Path, tmp_path: Path
) -> None:
    labels = server(farm, 4)
    before = metric(farm, "modbus_farm_tls_handshake_failures_total", **labels) or 0
    stranger = tmp_path / "other-ca"
    assert farm_command("certs", str(stranger)).returncode == 0
    for certificate in (None, stranger):  # no certificate; one from a CA the farm does not know
        client = tls_client(farm, certs, certificate)
        try:
            with pytest.raises((ConnectionException, ModbusIOException)):
                client.read_holding_registers(3, count=1, device_id=1)
        finally:
            client.close()
    wait_for(
        lambda: metric(farm, "modbus_farm_tls_handshake_failures_total", **labels) == before + 2,
        10,
        "both refusals to be counted",
    )


def test_farm_certs(certs: Path, tmp_path: Path) -> None:
    """The client certificate names its role; a second run does not overwrite silently."""
    pem = (certs / "client.pem").read_text()
    assert role_of(ssl.PEM_cert_to_DER_cert(pem)) == "operator"
    assert role_of(ssl.PEM_cert_to_DER_cert((certs / "server.pem").read_text())) is None
    again = farm_command("certs", str(certs))
    assert again.returncode != 0 and again.stderr.count("\n") == 1
    assert "--force" in again.stderr
    forced = farm_command("certs", str(tmp_path), "--role", "engineer", "--force")
    assert forced.returncode == 0, forced.stderr
    assert role_of(ssl.PEM_cert_to_DER_cert((tmp_path / "client.pem").read_text())) == "engineer"


def test_farm_certs_for_a_config_file(tmp_path: Path) -> None:
    """`farm certs FILE` writes the files FILE's TLS fleets name; the farm serves with them,
    a master holding the client pair written beside the CA gets in, and a fleet with no
    `client_ca` lets in a client with no certificate (its role: none)."""
    port_base, api_port = free_port_range(1), free_port()
    path = tmp_path / "secure.yaml"
    data: Any = config(port_base, "keys")
    secure = data["fleets"][3]
    # At addresses of their own, which the certificate does not name (it names loopback's
    # usual names): farm bench checks the CA's signature, as the README's example needs.
    secure["addressing"] = {"ip_start": "127.0.0.2", "port": port_base}
    open_one = {**secure, "name": "open", "name_pattern": "open-{i}", "tls": dict(secure["tls"])}
    del open_one["tls"]["client_ca"]  # its CA goes beside its certificate: the same keys/ca.pem
    open_one["addressing"] = {"ip_start": "127.0.0.3", "port": port_base}
    data["fleets"] = [secure, open_one]
    path.write_text(yaml.safe_dump(data))
    made = farm_command("certs", str(path), "--role", "engineer")
    assert made.returncode == 0 and "keys/client.pem" in made.stdout, made.stderr
    keys = tmp_path / "keys"
    assert sorted(p.name for p in keys.iterdir()) == sorted(
        ["ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key"]
    )
    assert role_of(ssl.PEM_cert_to_DER_cert((keys / "client.pem").read_text())) == "engineer"
    again = farm_command("certs", str(path))
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "--force" in again.stderr
    farm = FarmProcess(count=2, workers=1, port_base=port_base, api_port=api_port, file=str(path))
    farm.start()
    try:
        farm.wait_ready()
        done = farm_command(
            "bench", "--api-port", str(api_port), "--transport", "tls", "--certs", str(keys),
            "-c", "2", "--duration", "1", "--timeout", "3", "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        report = yaml.safe_load(done.stdout)
        assert report["targets"] == 2 and report["connection_errors"] == 0
        assert report["responses"] > 0
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # pymodbus's sync client passes no server name
        context.load_verify_locations(keys / "ca.pem")
        client = ModbusTlsClient("127.0.0.3", port=port_base, sslctx=context, timeout=3, retries=0)
        try:  # no certificate of its own
            assert client.read_holding_registers(3, count=1, device_id=1).registers == [0]
        finally:
            client.close()
        wait_for(
            lambda: metric(farm, "modbus_farm_tls_sessions_total", worker="0", role="none"),
            10,
            "the session without a certificate to be counted as role none",
        )
    finally:
        code, _, stderr = farm.stop()
        assert code == 0, stderr


# -- discovery and load ------------------------------------------------------------------


def test_nmap_modbus_discover_finds_each_device(farm: FarmProcess) -> None:
    ports = f"{farm.port(0)},{farm.port(1)}"  # only this farm's ports, only on loopback
    done = subprocess.run(
        ["nmap", "-n", "-Pn", "-sT", "-p", ports, "--script", "+modbus-discover", HOST],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for name in ("plain-0", "plain-1"):
        assert f"Slave ID data: M\\xFF{name}" in done.stdout, done.stdout  # 4D is "M"
    assert done.stdout.count("Device identification: ACME M-4") == 2, done.stdout


@pytest.mark.parametrize(("index", "transport"), [(2, "rtu-over-tcp"), (3, "udp"), (4, "tls")])
def test_farm_bench_speaks_every_transport(
    farm: FarmProcess, certs: Path, index: int, transport: str
) -> None:
    extra = ["--certs", str(certs)] if transport == "tls" else []
    counted = {**server(farm, index), "function_code": "3"}  # the bench's reads
    before = metric(farm, "modbus_farm_requests_total", **counted) or 0
    done = farm_command(
        "bench", "--api-port", str(farm.api_port), "--transport", transport, *extra,
        "-c", "2", "--duration", "1", "--timeout", "3", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = yaml.safe_load(done.stdout)
    assert report["targets"] == 1 and report["responses"] > 0
    assert report["exceptions_total"] == report["unexpected"] == report["timeouts"] == 0
    # The metrics count every transport's requests as they count Modbus/TCP's.
    after = metric(farm, "modbus_farm_requests_total", **counted) or 0
    assert after - before >= report["responses"], (before, after, report["responses"])


def test_farm_bench_says_when_the_tls_handshake_is_refused(farm: FarmProcess) -> None:
    """The secure fleet asks for a client certificate: a bench without one is refused at
    the handshake, and says so with a non-zero exit (not "0 answered" and exit 0)."""
    done = farm_command(
        "bench", "--api-port", str(farm.api_port), "--transport", "tls",
        "-c", "2", "--duration", "1", "--timeout", "3",
    )  # fmt: skip
    assert done.returncode != 0, done.stdout
    line = done.stderr.strip().splitlines()[-1]
    assert "TLS handshake" in line and "refused" in line and "--certs" in line, done.stderr
    assert "None us" not in done.stdout + done.stderr


# -- device state across a worker restart --------------------------------------------------


def test_diagnostics_and_files_survive_a_worker_restart(tmp_path: Path, certs: Path) -> None:
    port_base, api_port = free_port_range(5), free_port()
    path = tmp_path / "one.yaml"
    data = config(port_base, str(certs))
    data["fleets"] = data["fleets"][:1]  # type: ignore[index]
    path.write_text(yaml.safe_dump(data))
    farm = FarmProcess(
        count=2, workers=1, port_base=port_base, api_port=api_port, file=str(path)
    ).start()
    try:
        farm.wait_ready()
        client: Any = ModbusTcpClient(HOST, port=farm.port(0), timeout=2, retries=0)
        assert client.connect()
        record = FileRecord(file_number=4, record_number=7, record_data=b"\x06\xaf")
        assert not client.write_file_record([record]).isError()
        client.diag_clear_counters()
        for _ in range(3):
            client.read_holding_registers(0, count=1)
        assert client.diag_read_bus_message_count().message == 4
        client.diag_force_listen_only()  # pymodbus sends it expecting no answer
        client.close()
        wait_for(  # taken in by the worker before it is killed
            lambda: metric(farm, "modbus_farm_unanswered_total", server="plain-0", worker="0"),
            10,
            "listen-only mode to be entered",
        )
        victim = farm.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: farm.status()["workers"][0]["restarts"] == 1, 30, "a new worker")
        farm.wait_ready()
        client = ModbusTcpClient(HOST, port=farm.port(0), timeout=1, retries=0)
        assert client.connect()
        with pytest.raises(ModbusIOException):  # still in listen-only mode: silence
            client.read_holding_registers(0, count=1)
        client.close()
        with socket.create_connection((HOST, farm.port(0)), timeout=5) as sock:
            restart = struct.pack(">HHHB", 1, 0, 6, 1) + bytes.fromhex("08 0001 0000")
            count = struct.pack(">HHHB", 2, 0, 6, 1) + bytes.fromhex("08 000b 0000")
            sock.sendall(restart + count)  # the restart is not answered, the count is
            answer = sock.recv(100)
        assert answer[:2] == b"\x00\x02" and answer[7:12] == bytes.fromhex("08 000b 0001")
        client = ModbusTcpClient(HOST, port=farm.port(0), timeout=2, retries=0)
        assert client.connect()
        records = client.read_file_record(
            [FileRecord(file_number=4, record_number=7, record_length=2)]
        )
        client.close()
        assert records.records[0].record_data == b"\x06\xaf"
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr


def test_a_reboot_fault_powers_the_diagnostics_up(farm: FarmProcess) -> None:
    """A reboot ends listen-only mode and clears the counters, as a power cycle does."""
    api = FarmClient.at(HOST, farm.api_port)
    with socket.create_connection((HOST, farm.port(1)), timeout=5) as sock:
        sock.sendall(struct.pack(">HHHB", 1, 0, 6, 1) + bytes.fromhex("08 0004 0000"))
        wait_for(
            lambda: metric(farm, "modbus_farm_unanswered_total", **server(farm, 1)),
            10,
            "listen-only mode to be entered",
        )
    api.fault("reboot", "plain-1", duration=0.5)

    def answered() -> int | None:
        client: Any = ModbusTcpClient(HOST, port=farm.port(1), timeout=1, retries=0)
        try:
            client.connect()
            return int(client.diag_read_bus_message_count().message) + 1
        except (ConnectionException, ModbusIOException):
            return None
        finally:
            client.close()

    # Only the requests since it came back: the count request itself (and earlier tries).
    assert wait_for(answered, 30, "the server back, answering") - 1 <= 3


def test_transport_mistakes_are_one_line(tmp_path: Path) -> None:
    data = config(20000, str(tmp_path))
    fleets = data["fleets"]
    assert isinstance(fleets, list)
    fleets[3].pop("tls")
    path = tmp_path / "no-tls.yaml"
    path.write_text(yaml.safe_dump(data))
    done = farm_command("validate", str(path))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "fleets[3]" in done.stderr and "tls" in done.stderr
    fleets[3]["tls"] = {"certificate": "missing.pem", "key": "missing.key"}
    path.write_text(yaml.safe_dump(data))
    done = farm_command("validate", str(path))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert f"fleets[3].tls.certificate: {tmp_path / 'missing.pem'}: cannot read" in done.stderr


def test_a_tls_fleet_at_addresses_of_its_own_listens_on_802(tmp_path: Path) -> None:
    """Modbus/TCP Security's port is 802: a TLS fleet's default, where plain Modbus/TCP's is
    502; a `port` or a port range given says otherwise."""
    tls = {"certificate": "server.pem", "key": "server.key"}
    fleets = [
        {"name": "secure", "transport": "tls", "tls": tls, "addressing": {"ip_start": "127.0.0.5"}},
        {"name": "told", "transport": "tls", "tls": tls,
         "addressing": {"ip_start": "127.0.0.6", "port": 8802}},
        {"name": "ranged", "transport": "tls", "tls": tls, "addressing": {"port_start": 9000}},
        {"name": "plain", "addressing": {"ip_start": "127.0.0.7"}},
    ]  # fmt: skip
    data = {
        "templates": {"meter": {"units": [{"unit_id": 1, "holding_registers": 1}]}},
        "fleets": [{"template": "meter", "count": 1, **fleet} for fleet in fleets],
    }
    path = tmp_path / "ports.yaml"
    path.write_text(yaml.safe_dump(data))
    # A real pair: the plan loads and matches them, as validate and up do.
    made = make_certificates("operator", ("127.0.0.1",), 1)
    for name in ("server.pem", "server.key"):
        (tmp_path / name).write_bytes(made[name])
    done = farm_command("plan", str(path), "--servers")
    assert done.returncode == 0, done.stderr
    for address in ("127.0.0.5:802", "127.0.0.6:8802", "127.0.0.1:9000", "127.0.0.7:502"):
        assert address in done.stdout, done.stdout
