"""The Modbus specs clause by clause (issue 20), over every transport with raw frames and
with masters written by others, against one farm: TCP, RTU over TCP, UDP and TLS devices
of a template whose identity needs two answers and has an extended object, and a TCP
device whose template gives its vendor name alone.

Each test that proves a clause is marked `clause`; docs/conformance.md lists them, and
`test_the_conformance_table_names_every_clause_test` keeps the two in step.
"""

from __future__ import annotations

import ast
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymodbus import FramerType
from pymodbus.client import ModbusTcpClient, ModbusTlsClient, ModbusUdpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse

from farm.modbus import deviceid, mbap, pdu, rtu
from tests.farmproc import HOST, FarmProcess, free_port, free_port_range, run_together
from tests.rawmodbus import read_exactly, read_rtu_frame
from tests.tools import tool

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parent.parent
TRANSPORTS = ("tcp", "rtu-over-tcp", "udp", "tls", "tcp")  # by port offset; 4: partial identity
MBAP_TRANSPORTS = ("tcp", "udp", "tls")
LONG = "L" * 200  # two of these cannot share one answer (253 bytes)
SILENT_S = 0.5  # how long "no answer" is waited for


def config(port_base: int, certs: Path) -> dict[str, Any]:
    meter = {
        "identity": {
            "vendor_name": "ACME",
            "product_code": "M-4",
            "revision": "2.1",
            "vendor_url": LONG,
            "product_name": LONG,
            "user_application_name": "{name}",
            "extended": {0x80: "extra"},
        },
        "units": [{"unit_id": 1, "holding_registers": 100}, {"unit_id": 2, "coils": 8}],
    }
    partial = {"identity": {"vendor_name": "OnlyVendor"}, "units": [{"unit_id": 1}]}

    def fleet(offset: int, template: str = "meter", **extra: Any) -> dict[str, Any]:
        return {
            "name": f"f{offset}",
            "template": template,
            "count": 1,
            "name_pattern": f"dev{offset}",
            "addressing": {"host": HOST, "port_start": port_base + offset},
            **extra,
        }

    tls = {"certificate": str(certs / "server.pem"), "key": str(certs / "server.key")}
    return {
        "templates": {"meter": meter, "partial": partial},
        "fleets": [
            fleet(0),
            fleet(1, transport="rtu-over-tcp"),
            fleet(2, transport="udp"),
            fleet(3, transport="tls", tls=tls),
            fleet(4, "partial"),
        ],
    }


def farm_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farm", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    done = farm_command("certs", str(directory))
    assert done.returncode == 0, done.stderr
    return directory


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[FarmProcess]:
    port_base = free_port_range(len(TRANSPORTS))
    path = tmp_path_factory.mktemp("config") / "conformance.yaml"
    path.write_text(yaml.safe_dump(config(port_base, certs)))
    running = FarmProcess(
        count=len(TRANSPORTS), workers=1, port_base=port_base, api_port=free_port(), file=str(path)
    ).start()
    try:
        running.wait_ready()
        yield running
    finally:
        code, _, stderr = running.stop()
        assert code == 0, stderr


class Raw:
    """Raw requests to one device over its transport, one connection (or socket) kept."""

    def __init__(self, transport: str, port: int, keylog: Path | None = None) -> None:
        self.transport = transport
        self.transaction = 0
        if transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.connect((HOST, port))
        else:
            self.sock = socket.create_connection((HOST, port), timeout=5)
        if transport == "tls":
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            if keylog is not None:  # so that tshark can read inside the TLS records
                context.keylog_filename = str(keylog)
            self.sock = context.wrap_socket(self.sock)
        self.sock.settimeout(5)

    def send(self, unit: int, request: bytes) -> None:
        if self.transport == "rtu-over-tcp":
            self.sock.sendall(rtu.frame(unit, request))
        else:
            self.transaction += 1
            self.sock.sendall(mbap.frame(self.transaction, unit, request))

    def receive(self, timeout: float = 5) -> tuple[int, bytes] | None:
        """(unit id, answer PDU), or None when nothing comes within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            if self.transport == "rtu-over-tcp":
                frame = read_rtu_frame(self.sock)
                assert rtu.crc_ok(frame, 0, len(frame)), frame.hex()
                return frame[0], frame[1:-2]
            if self.transport == "udp":
                frame = self.sock.recv(512)
            else:
                head = read_exactly(self.sock, 7)
                frame = head + read_exactly(self.sock, mbap.frame_size(head) - 7)
        except TimeoutError:
            return None
        finally:
            self.sock.settimeout(5)
        assert frame[:2] == self.transaction.to_bytes(2, "big"), frame.hex()
        return frame[6], frame[7:]

    def ask(self, unit: int, request: bytes) -> bytes:
        self.send(unit, request)
        answered = self.receive()
        assert answered is not None, f"no answer to {request.hex()}"
        return answered[1]

    def silent(self, unit: int, request: bytes) -> bool:
        self.send(unit, request)
        return self.receive(SILENT_S) is None

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=range(4), ids=TRANSPORTS[:4])
def raw(request: pytest.FixtureRequest, farm: FarmProcess) -> Iterator[Raw]:
    connection = Raw(TRANSPORTS[request.param], farm.port(request.param))
    try:
        yield connection
    finally:
        connection.close()


def pymodbus_client(farm: FarmProcess, index: int, certs: Path | None = None) -> Any:
    """pymodbus's client for the device at port offset `index`, connected."""
    transport = TRANSPORTS[index]
    port = farm.port(index)
    client: Any
    if transport == "udp":
        client = ModbusUdpClient(HOST, port=port, timeout=2, retries=0)
    elif transport == "tls":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        client = ModbusTlsClient(HOST, port=port, sslctx=context, timeout=2, retries=0)
    else:
        framer = FramerType.RTU if transport == "rtu-over-tcp" else FramerType.SOCKET
        client = ModbusTcpClient(HOST, port=port, framer=framer, timeout=2, retries=0)
    assert client.connect()
    return client


# -- unit ids (TCP implementation guide 4.4.2; serial line 2.2) --------------------------


@pytest.mark.clause("unit-0-tcp")
def test_unit_0_is_the_first_unit_on_tcp_udp_tls_and_a_broadcast_on_rtu(raw: Raw) -> None:
    raw.ask(1, pdu.write_register(4, 404))
    if raw.transport == "rtu-over-tcp":
        assert raw.silent(0, pdu.read(3, 4, 1))  # a broadcast read: no answer
        assert raw.silent(0, pdu.write_register(4, 405))  # acted on, not answered
        assert pdu.registers(raw.ask(1, pdu.read(3, 4, 1))) == [405]
        return
    assert pdu.registers(raw.ask(0, pdu.read(3, 4, 1))) == [404]
    assert raw.ask(0, pdu.read(1, 0, 8)) == raw.ask(1, pdu.read(1, 0, 8))  # unit 1's coils


@pytest.mark.clause("unit-0-tcp")
@pytest.mark.parametrize("index", [0, 2, 3], ids=MBAP_TRANSPORTS)
def test_pymodbus_reads_unit_0(farm: FarmProcess, index: int) -> None:
    client = pymodbus_client(farm, index)
    try:
        assert not client.write_register(6, 606, device_id=1).isError()
        assert client.read_holding_registers(6, count=1, device_id=0).registers == [606]
    finally:
        client.close()


# -- FC 08/00 with N x 2 data bytes (6.8) -------------------------------------------------


@pytest.mark.clause("fc08-00-odd")
def test_an_odd_echo_is_refused_03(raw: Raw) -> None:
    assert raw.ask(1, pdu.diagnostic(0, b"\xa5\x37")) == pdu.diagnostic(0, b"\xa5\x37")
    assert raw.ask(1, pdu.diagnostic(0, b"\xa5")) == b"\x88\x03"
    assert raw.ask(1, pdu.diagnostic(0, b"\xa5\x37\x01")) == b"\x88\x03"
    assert raw.ask(1, pdu.read(3, 0, 1))[0] == 3  # and the connection goes on


@pytest.mark.clause("fc08-00-odd")
@pytest.mark.parametrize("index", range(4), ids=TRANSPORTS[:4])
def test_pymodbus_sees_an_odd_echo_refused(farm: FarmProcess, index: int) -> None:
    client = pymodbus_client(farm, index)
    try:
        answer = client.diag_query_data(b"\x01\x02\x03", device_id=1)
        assert isinstance(answer, ExceptionResponse) and answer.exception_code == 3
    finally:
        client.close()


# -- function codes 0x80-0xFF in a request (4.1, 7) ----------------------------------------


@pytest.mark.clause("fc-80-ff")
@pytest.mark.parametrize("code", [0x80, 0x83, 0x90, 0xAB, 0xFF])
def test_a_function_code_with_the_exception_bit_is_not_answered(raw: Raw, code: int) -> None:
    assert raw.silent(1, bytes((code, 0, 0, 0, 1)))
    assert raw.ask(1, pdu.read(3, 0, 1))[:2] == b"\x03\x02"  # the next request is answered


@pytest.mark.clause("fc-80-ff")
def test_pymodbus_gets_its_next_answer_after_a_reserved_function_code(farm: FarmProcess) -> None:
    client = pymodbus_client(farm, 0)
    try:
        client.socket.sendall(mbap.frame(7, 1, b"\x83\x00\x00\x00\x01"))
        assert not client.write_register(8, 808, device_id=1).isError()  # not the 83 answer
        assert client.read_holding_registers(8, count=1, device_id=1).registers == [808]
    finally:
        client.close()


# -- Read Device Identification (6.21) -----------------------------------------------------


def stream(raw: Raw, read_code: int, unit: int = 1) -> tuple[dict[int, bytes], list[bytes]]:
    """Follow More Follows from object 0: every object, and each answer."""
    found: dict[int, bytes] = {}
    answers, following = [], 0
    for _ in range(10):
        answer = raw.ask(unit, deviceid.request(read_code, following))
        answers.append(answer)
        objects, more, following = deviceid.objects(answer)
        found |= objects
        if more == 0:
            assert following == 0
            return found, answers
    raise AssertionError(f"More Follows never ended: {[a.hex() for a in answers]}")


@pytest.mark.clause("fc43-stream")
def test_stream_access_splits_at_the_pdu_limit(raw: Raw) -> None:
    found, answers = stream(raw, deviceid.REGULAR)
    name = b"dev" + str(TRANSPORTS.index(raw.transport)).encode()
    assert found == {
        0: b"ACME", 1: b"M-4", 2: b"2.1", 3: LONG.encode(), 4: LONG.encode(), 6: name,
    }  # fmt: skip
    assert len(answers) == 2 and all(len(a) <= 253 for a in answers)
    assert deviceid.objects(answers[0])[1:] == (0xFF, 4)  # More Follows, Next Object Id
    basic, answers = stream(raw, deviceid.BASIC)
    assert basic == {0: b"ACME", 1: b"M-4", 2: b"2.1"} and len(answers) == 1


@pytest.mark.clause("fc43-individual")
def test_individual_access_answers_one_object(raw: Raw) -> None:
    for object_id, value in ((0, b"ACME"), (3, LONG.encode()), (0x80, b"extra")):
        answer = raw.ask(1, deviceid.request(deviceid.INDIVIDUAL, object_id))
        assert answer[:3] == bytes((43, 14, 4))
        assert deviceid.objects(answer) == ({object_id: value}, 0, 0)
    assert raw.ask(1, deviceid.request(deviceid.INDIVIDUAL, 5)) == b"\xab\x02"  # not given


@pytest.mark.clause("fc43-conformity")
def test_conformity_is_0x83_with_extended_objects_else_0x82(raw: Raw, farm: FarmProcess) -> None:
    answer = raw.ask(1, deviceid.request(deviceid.BASIC))
    assert answer[3] == 0x83
    extended, _ = stream(raw, deviceid.EXTENDED)
    assert extended[0x80] == b"extra"
    if raw.transport == "tcp":
        partial = Raw("tcp", farm.port(4))
        try:
            assert partial.ask(1, deviceid.request(deviceid.BASIC))[3] == 0x82
            assert partial.ask(1, deviceid.request(deviceid.INDIVIDUAL, 0x80)) == b"\xab\x02"
        finally:
            partial.close()


@pytest.mark.clause("fc43-partial")
def test_a_partial_identity_borrows_nothing(farm: FarmProcess) -> None:
    raw = Raw("tcp", farm.port(4))
    try:
        found, _ = stream(raw, deviceid.EXTENDED)
    finally:
        raw.close()
    assert found == {0: b"OnlyVendor", 1: b"unknown", 2: b"0.0"}


@pytest.mark.clause("fc43-stream")
@pytest.mark.parametrize("index", range(4), ids=TRANSPORTS[:4])
def test_pymodbus_follows_more_follows_to_the_end(farm: FarmProcess, index: int) -> None:
    client = pymodbus_client(farm, index)
    try:
        found: dict[int, bytes] = {}
        following, rounds = 0, 0
        while True:
            rounds += 1
            assert rounds <= 5, "More Follows never ended"
            answer = client.read_device_information(read_code=2, object_id=following, device_id=1)
            assert not answer.isError(), answer
            found |= answer.information
            if not answer.more_follows:
                break
            following = answer.next_object_id
        assert found[3] == LONG.encode() and found[4] == LONG.encode() and rounds == 2
        single = client.read_device_information(read_code=4, object_id=4, device_id=1)
        assert single.information == {4: LONG.encode()} and not single.more_follows
    finally:
        client.close()


def test_nmap_reads_the_identity_of_a_partial_template(farm: FarmProcess) -> None:
    done = subprocess.run(
        ["nmap", "-n", "-Pn", "-sT", "-p", str(farm.port(4)), "--script", "+modbus-discover",
         HOST],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Device identification: OnlyVendor unknown 0.0" in done.stdout, done.stdout


# -- RTU frames found by their length (serial line 2.5.1.1; application protocol 6.8) ------


def mis_split_by_the_shortest_crc() -> list[int]:
    """The echo values whose first seven bytes end in a matching CRC (256 of 65,536)."""
    return [
        value
        for value in range(65536)
        if rtu.crc_ok(rtu.frame(1, pdu.diagnostic(0, value.to_bytes(2, "big"))), 0, 7)
    ]


@pytest.mark.clause("rtu-length")
def test_rtu_echoes_the_values_the_crc_search_mis_split(farm: FarmProcess) -> None:
    values = mis_split_by_the_shortest_crc()
    assert len(values) == 256 and 0x001B in values
    frames = [rtu.frame(1, pdu.diagnostic(0, v.to_bytes(2, "big"))) for v in values]
    with socket.create_connection((HOST, farm.port(1)), timeout=5) as sock:
        for frame in frames[:64]:  # one frame each
            sock.sendall(frame)
            assert read_exactly(sock, len(frame)) == frame
        for cut in range(1, 8):  # split at every byte boundary
            sock.sendall(frames[cut][:cut])
            time.sleep(0.005)
            sock.sendall(frames[cut][cut:])
            assert read_exactly(sock, 8) == frames[cut]
        sock.sendall(b"".join(frames))  # pipelined
        assert read_exactly(sock, 8 * len(frames)) == b"".join(frames)


@pytest.mark.clause("rtu-length")
def test_pymodbus_rtu_framer_echoes_0x001b(farm: FarmProcess) -> None:
    client = pymodbus_client(farm, 1)
    try:
        for value in (b"\x00\x1b", b"\x00\x1c", b"\xa5\x37"):
            assert client.diag_query_data(value, device_id=1).message == value
        assert client.read_holding_registers(0, count=2, device_id=1).registers == [0, 0]
    finally:
        client.close()


@pytest.mark.clause("rtu-resync")
def test_rtu_wrong_byte_count_is_refused_and_the_next_request_kept(farm: FarmProcess) -> None:
    wrong = rtu.frame(1, bytes.fromhex("10 0000 0001 04 0000"))
    read = rtu.frame(1, pdu.read(3, 0, 1))
    with socket.create_connection((HOST, farm.port(1)), timeout=5) as sock:
        sock.sendall(wrong)
        assert read_rtu_frame(sock) == rtu.frame(1, b"\x90\x03")  # at the silence after it
        time.sleep(1.0)
        sock.sendall(read)
        assert read_rtu_frame(sock)[:3] == b"\x01\x03\x02"
        sock.sendall(wrong + read)  # pipelined
        assert read_rtu_frame(sock) == rtu.frame(1, b"\x90\x03")
        assert read_rtu_frame(sock)[:3] == b"\x01\x03\x02"


@pytest.mark.clause("rtu-resync")
def test_pymodbus_rtu_master_after_a_wrong_byte_count(farm: FarmProcess) -> None:
    client = pymodbus_client(farm, 1)
    try:
        client.socket.sendall(rtu.frame(1, bytes.fromhex("10 0000 0001 04 0000")))
        time.sleep(0.5)  # the 90 03 comes back and is read as a stray answer, then dropped
        client.socket.recv(16)
        assert not client.write_register(9, 909, device_id=1).isError()
        assert client.read_holding_registers(9, count=1, device_id=1).registers == [909]
        with pytest.raises(ModbusIOException):  # unit 0 on RTU: a broadcast, no answer
            client.read_holding_registers(9, count=1, device_id=0)
    finally:
        client.close()


# -- farm validate: objects that fit, in ASCII --------------------------------------------


def validate_all(tmp_path: Path, *cases: tuple[dict[str, Any], str]) -> list[str]:
    """`farm validate` of a one-fleet config per (identity, name_pattern): "ok", or its error
    output; the validations run at once (tests.farmproc.run_together)."""
    commands = []
    for number, (identity, name_pattern) in enumerate(cases):
        config = {
            "templates": {"t": {"identity": identity, "units": [{"unit_id": 1}]}},
            "fleets": [
                {
                    "name": "f",
                    "template": "t",
                    "count": 2,
                    "name_pattern": name_pattern,
                    "addressing": {"host": HOST, "port_start": 40000},
                }
            ],
        }
        path = tmp_path / f"farm{number}.yaml"
        path.write_text(yaml.safe_dump(config))
        commands.append([sys.executable, "-m", "farm", "validate", str(path)])
    return [
        "ok" if done.returncode == 0 else done.stderr.strip() for done in run_together(commands)
    ]


@pytest.mark.clause("fc43-fit")
def test_validate_refuses_objects_that_cannot_fit_or_are_not_ascii(tmp_path: Path) -> None:
    fits = {"user_application_name": "U" * 240 + "{name}"}  # d0, d1: 242 bytes
    longest, too_long, fitting, too_long_named, not_ascii, out_of_range = validate_all(
        tmp_path,
        ({"vendor_name": "V" * 244}, "d{i}"),
        ({"vendor_name": "V" * 245}, "d{i}"),
        (fits, "d{i}"),
        (fits, "device-{i}"),  # device-0: 248 bytes
        ({"product_name": "Zähler"}, "d{i}"),
        ({"extended": {0x20: "x"}}, "d{i}"),
    )
    assert longest == "ok"
    assert "templates.t.identity.vendor_name" in too_long and "244" in too_long, too_long
    assert len(too_long.splitlines()) == 1, too_long
    assert fitting == "ok"
    error = too_long_named
    assert "templates.t.identity.user_application_name" in error and "device-0" in error, error
    error = not_ascii
    assert "templates.t.identity.product_name" in error and "ASCII" in error, error
    error = out_of_range
    assert "templates.t.identity.extended" in error and "0x80" in error, error


# -- the table in docs/conformance.md -----------------------------------------------------


def clause_tests() -> set[str]:
    """`file::name` of every test function marked `clause`, found in the sources."""
    found = set()
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(
                "mark.clause" in ast.unparse(decorator) for decorator in node.decorator_list
            ):
                found.add(f"tests/{path.name}::{node.name}")
    return found


def defined_tests() -> set[str]:
    found = set()
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                found.add(f"tests/{path.name}::{node.name}")
    return found


def test_the_conformance_table_names_every_clause_test() -> None:
    text = (ROOT / "docs" / "conformance.md").read_text()
    named = set(re.findall(r"`(tests/test_\w+\.py::test_\w+)`", text))
    assert named, "docs/conformance.md names no test"
    missing = named - defined_tests()
    assert not missing, f"docs/conformance.md names tests that do not exist: {sorted(missing)}"
    untabled = clause_tests() - named
    assert not untabled, f"tests marked clause but not in docs/conformance.md: {sorted(untabled)}"


# -- Wireshark's dissectors on every transport -------------------------------------------


def exchange(farm: FarmProcess, index: int, keylog: Path) -> int:
    """A varied exchange with the device at port offset `index`: reads, writes, two
    exceptions, an echo, identification in two answers, unit 0, a wrong byte count on RTU,
    a pipelined burst. Returns the segments of answers read (a burst's answers come in one,
    which tshark shows as one row)."""
    transport = TRANSPORTS[index]
    requests = [
        pdu.write_registers(0, [1, 2, 3]),
        pdu.read(3, 0, 10),
        pdu.write_coils(0, 3, pdu.pack_bits([True, False, True])),
        pdu.read(1, 0, 16),
        pdu.write_coil(3, True),
        pdu.write_register(9, 99),
        pdu.read(3, 5000, 1),  # exception 02
        pdu.diagnostic(0, b"\x00\x1b"),
        pdu.read(4, 0, 200),  # exception 03
        deviceid.request(deviceid.REGULAR),
        deviceid.request(deviceid.REGULAR, 4),
        deviceid.request(deviceid.INDIVIDUAL, 0x80),
    ]
    raw = Raw(transport, farm.port(index), keylog)
    try:
        for request in requests:
            raw.ask(1, request)
        if transport == "udp":
            return len(requests)
        raw.ask(0 if transport != "rtu-over-tcp" else 1, pdu.read(3, 0, 1))
        burst = [pdu.read(3, i, 2) for i in range(5)]
        if transport == "rtu-over-tcp":
            raw.sock.sendall(rtu.frame(1, bytes.fromhex("10 0000 0001 04 0000")))
            assert raw.receive() == (1, b"\x90\x03")
            raw.sock.sendall(b"".join(rtu.frame(1, request) for request in burst))
            for _ in burst:
                read_rtu_frame(raw.sock)
            return len(requests) + 2 + 1  # the burst's answers: one segment, one row
        raw.sock.sendall(b"".join(mbap.frame(100 + i, 1, r) for i, r in enumerate(burst)))
        read_exactly(raw.sock, 13 * len(burst))
        return len(requests) + 1 + 1
    finally:
        raw.close()


FIELDS = ("tcp.srcport", "udp.srcport", "_ws.col.Protocol", "_ws.malformed",
          "_ws.expert.severity", "_ws.expert.message")  # fmt: skip
WARNING = 0x600000  # Wireshark's expert severities: chat 0x200000, note 0x400000, warn, error


class Dissector:
    """tshark dissecting the four devices' ports on the loopback interface live, a row of
    FIELDS per Modbus frame."""

    def __init__(self, ports: list[int], keylog: Path, log: Path) -> None:
        self.ports, self.rows = ports, list[list[str]]()
        # Each dissector's own port preference (decode-as alone leaves the Modbus/TCP one
        # unable to tell queries from answers: an expert warning on every frame).
        decode = [
            "-o", f"mbtcp.tcp.port:{ports[0]}", "-o", f"mbrtu.tcp.port:{ports[1]}",
            "-o", f"mbudp.udp.port:{ports[2]}", "-o", f"mbtcp.tls.port:{ports[3]}",
            "-d", f"tcp.port=={ports[3]},tls",
            "-o", f"tls.keylog_file:{keylog}", "-o", "mbrtu.crc_verification:TRUE",
        ]  # fmt: skip
        command = [
            tool("tshark"), "-i", "lo", "-f", " or ".join(f"port {p}" for p in ports), "-l",
            "-a", "duration:150", *decode, "-Y", "mbtcp or mbrtu or mbudp", "-T", "fields",
            "-E", "occurrence=a", *(a for f in FIELDS for a in ("-e", f)),
        ]  # fmt: skip
        with log.open("w") as stderr:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=stderr, text=True
            )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:  # ends when tshark exits
            if line.strip():
                self.rows.append(line.rstrip("\n").split("\t"))

    def from_port(self, index: int) -> list[list[str]]:
        """The rows of frames the device at `index` sent."""
        port = str(self.ports[index])
        return [row for row in list(self.rows) if port in (row[0], row[1])]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=30)
        self.reader.join(timeout=30)


@pytest.mark.clause("wire")
def test_tshark_dissects_every_transport(farm: FarmProcess, tmp_path: Path) -> None:
    keylog = tmp_path / "tls-keys.log"
    dissector = Dissector([farm.port(index) for index in range(4)], keylog, tmp_path / "log")
    try:
        # Started once a frame of the TCP device shows (its "Capture started" comes earlier).
        probe = Raw("tcp", farm.port(0))
        try:
            deadline = time.monotonic() + 30
            while not dissector.from_port(0):
                assert time.monotonic() < deadline, (tmp_path / "log").read_text()
                probe.ask(1, pdu.read(3, 0, 1))
                time.sleep(0.05)  # the poll's interval
        finally:
            probe.close()
        before = len(dissector.from_port(0))
        answers = {index: exchange(farm, index, keylog) for index in range(4)}
        answers[0] += before
        deadline = time.monotonic() + 60
        while not all(len(dissector.from_port(i)) >= answers[i] for i in range(4)):
            seen = [len(dissector.from_port(i)) for i in range(4)]
            assert time.monotonic() < deadline, f"tshark dissected {seen} of {answers} answers"
            time.sleep(0.05)
    finally:
        dissector.stop()
    for index in range(4):
        problems = [
            row
            for row in dissector.from_port(index)
            if row[3] or any(int(level, 0) >= WARNING for level in row[4].split(",") if level)
        ]
        assert problems == [], (TRANSPORTS[index], problems[:5])
