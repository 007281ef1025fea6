"""The engine's fast path against its reference path, and the engine against pymodbus's server.

1. Property: any request PDU, valid or not (bad counts, addresses, unit ids, lengths, write
   values, unknown function codes), answered by `Device.answer` (fast path first) and by the
   same device with the fast path switched off (pymodbus's PDU classes via
   `reference_answer`) gives the same bytes and leaves the same banks behind.
2. Differential: requests where pymodbus follows the Modbus spec get the same answer from
   the engine as from pymodbus's own `ModbusTcpServer`; the cases where the farm departs from
   pymodbus on purpose (farm/engine.py's docstring) are each named below, with both answers.
3. The same for the diagnostic and file functions (FC 07, 08, 11, 12, 17, 20, 21, 24),
   each against a fresh farm device: pymodbus's server keeps their state once per process
   and never counts, so most of them are departures, each named.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from farm.config.templates import Identity, Table
from farm.ipc.banks import UnitBank
from farm.worker import engine, fastpath
from farm.worker.engine import Device
from tests.farmproc import HOST

pytestmark = pytest.mark.timeout(300)

FAST_CODES = (1, 2, 3, 4, 5, 6, 15, 16)


# -- 1. fast path == reference path ----------------------------------------------------


def bit_bytes(size: int) -> st.SearchStrategy[bytes]:
    """`size` bytes of 0 or 1, as a bit table (or a read-only mask) holds them."""
    return st.binary(min_size=size, max_size=size).map(lambda data: bytes(b & 1 for b in data))


@st.composite
def banks(draw: st.DrawFn) -> dict[str, bytes | None]:
    """Table contents (small tables, so that requests often cross their ends)."""
    bits = draw(st.integers(1, 2100)), draw(st.integers(1, 2100))
    registers = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    content: dict[str, bytes | None] = {
        "coils": draw(bit_bytes(bits[0])),
        "discrete_inputs": draw(bit_bytes(bits[1])),
        "holding_registers": draw(st.binary(min_size=2 * registers[0], max_size=2 * registers[0])),
        "input_registers": draw(st.binary(min_size=2 * registers[1], max_size=2 * registers[1])),
    }
    # Read-only points: writes touching one answer 02 on both paths.
    content["read_only_coils"] = draw(st.none() | bit_bytes(bits[0]))
    content["read_only_holding"] = draw(st.none() | bit_bytes(registers[0]))
    return content


def build_bank(content: dict[str, bytes | None]) -> UnitBank:
    views = {
        name: memoryview(bytearray(data))
        for name, data in content.items()
        if not name.startswith("read_only") and data is not None
    }
    return UnitBank(
        unit_id=1,
        read_only_coils=content["read_only_coils"],
        read_only_holding=content["read_only_holding"],
        coils=views["coils"],
        discrete_inputs=views["discrete_inputs"],
        holding_registers=views["holding_registers"],
        input_registers=views["input_registers"],
    )


def snapshot(bank: UnitBank) -> tuple[bytes, ...]:
    return tuple(
        bytes(view)
        for view in (bank.coils, bank.discrete_inputs, bank.holding_registers, bank.input_registers)
    )


TABLE_OF = {1: "coils", 5: "coils", 15: "coils", 2: "discrete_inputs"}
TABLE_OF |= {3: "holding_registers", 6: "holding_registers", 16: "holding_registers"}
TABLE_OF |= {4: "input_registers"}
MOST = {1: 2000, 2: 2000, 3: 125, 4: 125, 5: 1, 6: 1, 15: 0x07B0, 16: 123}


def rarely(draw: st.DrawFn) -> bool:
    return draw(st.integers(0, 9)) == 0


# The same strategies as written inline, made once for each value: a strategy built anew at
# every draw is validated anew too, a good part of this property's time.
@functools.cache
def counts(most: int) -> st.SearchStrategy[int]:
    return st.integers(1, most) | st.sampled_from((0, 1, most, most + 1)) | st.integers(0, 0xFFFF)


@functools.cache
def addresses(edge: int) -> st.SearchStrategy[int]:
    return (
        st.integers(max(0, edge - 2), min(0xFFFF, edge + 2))
        | st.integers(0, 5)
        | st.integers(0, 0xFFFF)
    )


@st.composite
def requests(draw: st.DrawFn, sizes: dict[str, int]) -> tuple[int, bytes]:
    """(unit id, PDU): mostly well-formed hot function codes, often at a table's edges,
    sometimes wrong in their unit, count, address, value, byte count or length."""
    unit = 1 if not rarely(draw) else draw(st.sampled_from((255, 0, 2, 247)))
    fc = draw(st.sampled_from(FAST_CODES)) if not rarely(draw) else draw(st.integers(0, 255))
    most = MOST.get(fc, 125)
    count = draw(counts(most))
    size = sizes.get(TABLE_OF.get(fc, ""), 100)
    edge = max(0, size - (1 if fc in (5, 6) else count))
    address = draw(addresses(edge))
    if fc in (1, 2, 3, 4):
        pdu = struct.pack(">BHH", fc, address, count)
    elif fc == 5:
        value = draw(st.sampled_from((0x0000, 0xFF00, 0x00FF, 0xFFFF)) | st.integers(0, 0xFFFF))
        pdu = struct.pack(">BHH", 5, address, value)
    elif fc == 6:
        pdu = struct.pack(">BHH", 6, address, draw(st.integers(0, 0xFFFF)))
    elif fc in (15, 16):
        count = min(count, 2010 if fc == 15 else 130)
        data_size = min(2 * count if fc == 16 else (count + 7) // 8, 246)
        byte_count = data_size if not rarely(draw) else draw(st.integers(0, 255))
        data = draw(st.binary(min_size=data_size, max_size=data_size))
        pdu = struct.pack(">BHHB", fc, address, count, byte_count) + data
    else:
        pdu = bytes([fc]) + draw(st.binary(max_size=8))
    if rarely(draw):  # cut short, as a confused client might send it
        pdu = pdu[: draw(st.integers(1, len(pdu)))]
    if rarely(draw):  # or with trailing bytes
        pdu += draw(st.binary(min_size=1, max_size=4))
    return unit, pdu[:253]


def no_fast_answer(bank: UnitBank, pdu: bytes) -> None:
    """engine.fast_answer's stand-in for the reference path: never an answer (a plain
    function: a MagicMock for each of ~6,000 requests was an eighth of the property's time)."""
    return None


def device(bank: UnitBank) -> Device:
    return Device("device-0000", {1: bank}, Identity())


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_path_answers_like_the_reference_path(data: st.DataObject) -> None:
    content = data.draw(banks())
    fast_bank, reference_bank = build_bank(content), build_bank(content)
    sizes = {table: fast_bank.size(Table(table)) for table in TABLE_OF.values()}
    sequence = data.draw(st.lists(requests(sizes), min_size=1, max_size=12))
    fast, reference = device(fast_bank), device(reference_bank)
    for unit, pdu in sequence:
        answer = fast.answer(unit, pdu)
        with mock.patch.object(engine, "fast_answer", no_fast_answer):
            expected = reference.answer(unit, pdu)
        assert answer == expected, f"unit {unit} pdu {pdu.hex()}"
        assert snapshot(fast_bank) == snapshot(reference_bank), f"after pdu {pdu.hex()}"


@pytest.mark.parametrize("fc", FAST_CODES)
def test_every_hot_function_code_takes_the_fast_path(fc: int) -> None:
    """Otherwise the property above would compare the reference path with itself."""
    bank = build_bank(
        {
            "coils": bytes(100),
            "discrete_inputs": bytes(100),
            "holding_registers": bytes(200),
            "input_registers": bytes(200),
            "read_only_coils": None,
            "read_only_holding": None,
        }
    )
    pdu = {
        5: struct.pack(">BHH", 5, 1, 0xFF00),
        6: struct.pack(">BHH", 6, 1, 7),
        15: struct.pack(">BHHB", 15, 1, 3, 1) + b"\x05",
        16: struct.pack(">BHHB", 16, 1, 1, 2) + b"\x00\x07",
    }.get(fc, struct.pack(">BHH", fc, 0, 3))
    assert fastpath.fast_answer(bank, pdu) is not None


# -- 2. the engine against pymodbus's own server ----------------------------------------

BITS, REGISTERS = 1024, 1000  # pymodbus pads bit blocks to 16: keep the sizes equal
COILS = [i % 3 == 0 for i in range(BITS)]
DISCRETE = [i % 5 == 0 for i in range(BITS)]
HOLDING = [(i * 257) & 0xFFFF for i in range(REGISTERS)]
INPUTS = [(i * 7 + 3) & 0xFFFF for i in range(REGISTERS)]


class PymodbusServer:
    """pymodbus's ModbusTcpServer on its own loop in a thread, and one client socket to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        listener: Any = self.server.transport  # an asyncio.Server, typed as a transport
        port = listener.sockets[0].getsockname()[1]
        self.sock = socket.create_connection((HOST, port), timeout=5)
        self.transaction = 0

    async def _start(self) -> ModbusTcpServer:
        simdata = (
            [SimData(0, values=COILS, datatype=DataType.BITS)],
            [SimData(0, values=DISCRETE, datatype=DataType.BITS)],
            [SimData(0, values=HOLDING, datatype=DataType.UINT16)],
            [SimData(0, values=INPUTS, datatype=DataType.UINT16)],
        )
        # Built inside the running loop, as pymodbus requires; port 0: any free port.
        server = ModbusTcpServer(SimDevice(id=1, simdata=simdata), address=(HOST, 0))
        await server.serve_forever(background=True)
        return server

    def ask(self, unit: int, pdu: bytes) -> bytes:
        """One request, one response (pymodbus's server drops pipelined requests)."""
        self.transaction = (self.transaction + 1) & 0xFFFF
        self.sock.sendall(struct.pack(">HHHB", self.transaction, 0, len(pdu) + 1, unit) + pdu)
        data = b""
        while len(data) < 6 or len(data) < 6 + struct.unpack_from(">H", data, 4)[0]:
            chunk = self.sock.recv(4096)
            assert chunk, "pymodbus closed the connection"
            data += chunk
        assert struct.unpack_from(">H", data)[0] == self.transaction
        return data[7:]

    def close(self) -> None:
        self.sock.close()
        asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def farm_device() -> Device:
    """The engine, holding the same values as the pymodbus server."""
    bank = UnitBank(
        unit_id=1,
        coils=memoryview(bytearray(COILS)),
        discrete_inputs=memoryview(bytearray(DISCRETE)),
        holding_registers=memoryview(bytearray(struct.pack(f">{REGISTERS}H", *HOLDING))),
        input_registers=memoryview(bytearray(struct.pack(f">{REGISTERS}H", *INPUTS))),
    )
    # File 4 for FC 20/21; a FIFO at holding register 0 (it holds 0: an empty queue).
    files = {4: memoryview(bytearray(2 * 10))}
    return Device("device-0000", {1: bank}, Identity(), files=files, fifos=[(1, 0)])


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[PymodbusServer, Device]]:
    """Both sides, kept for the module: writes must leave both in the same state."""
    quiet = logging.getLogger("pymodbus")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL + 1)  # pymodbus logs a traceback for an unknown unit
    server = PymodbusServer()
    try:
        yield server, farm_device()
    finally:
        server.close()
        quiet.setLevel(level)


@st.composite
def spec_requests(draw: st.DrawFn) -> bytes:
    """Requests on which pymodbus follows the spec: valid quantities and values, any address."""
    fc = draw(st.sampled_from((1, 2, 3, 4, 5, 6, 15, 16, 22, 23)))
    address = draw(st.integers(0, 30) | st.integers(990, 1030) | st.integers(0, 0xFFFF))
    if fc in (1, 2):
        return struct.pack(">BHH", fc, address, draw(st.integers(1, 2000)))
    if fc in (3, 4):
        return struct.pack(">BHH", fc, address, draw(st.integers(1, 125)))
    if fc == 5:
        return struct.pack(">BHH", 5, address, draw(st.sampled_from((0, 0xFF00))))
    if fc == 6:
        return struct.pack(">BHH", 6, address, draw(st.integers(0, 0xFFFF)))
    if fc == 15:
        count = draw(st.integers(1, 0x07B0))
        data = draw(st.binary(min_size=(count + 7) // 8, max_size=(count + 7) // 8))
        return struct.pack(">BHHB", 15, address, count, len(data)) + data
    if fc == 16:
        count = draw(st.integers(1, 123))
        data = draw(st.binary(min_size=2 * count, max_size=2 * count))
        return struct.pack(">BHHB", 16, address, count, len(data)) + data
    if fc == 22:
        masks = draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF))
        return struct.pack(">BHHH", 22, address, *masks)
    count = draw(st.integers(1, 121))
    data = draw(st.binary(min_size=2 * count, max_size=2 * count))
    read = draw(st.integers(0, 0xFFFF)), draw(st.integers(1, 125))
    return struct.pack(">BHHHHB", 23, *read, address, count, len(data)) + data


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(pdu=spec_requests())
def test_engine_answers_like_pymodbus_where_pymodbus_follows_the_spec(
    pair: tuple[PymodbusServer, Device], pdu: bytes
) -> None:
    server, farm = pair
    assert farm.answer(1, pdu) == server.ask(1, pdu), pdu.hex()


def writes(seed: int, count: int) -> list[bytes]:
    """`count` valid writes (FC 5, 6, 15, 16, 22, 23) inside the tables, the same each run."""
    draw = random.Random(seed)
    out: list[bytes] = []
    for _ in range(count):
        fc = draw.choice((5, 6, 15, 16, 22, 23))
        if fc == 5:
            out.append(struct.pack(">BHH", 5, draw.randrange(BITS), draw.choice((0, 0xFF00))))
        elif fc == 6:
            out.append(struct.pack(">BHH", 6, draw.randrange(REGISTERS), draw.randrange(1 << 16)))
        elif fc == 15:
            bits = draw.randint(1, 200)
            data = draw.randbytes((bits + 7) // 8)
            address = draw.randrange(BITS - bits)
            out.append(struct.pack(">BHHB", 15, address, bits, len(data)) + data)
        elif fc == 16:
            words = draw.randint(1, 123)
            address = draw.randrange(REGISTERS - words)
            data = draw.randbytes(2 * words)
            out.append(struct.pack(">BHHB", 16, address, words, len(data)) + data)
        elif fc == 22:
            masks = draw.randrange(1 << 16), draw.randrange(1 << 16)
            out.append(struct.pack(">BHHH", 22, draw.randrange(REGISTERS), *masks))
        else:
            words = draw.randint(1, 121)
            read = draw.randrange(REGISTERS - 125), draw.randint(1, 125)
            address = draw.randrange(REGISTERS - words)
            data = draw.randbytes(2 * words)
            out.append(struct.pack(">BHHHHB", 23, *read, address, words, len(data)) + data)
    return out


def tables(ask: Callable[[bytes], bytes | None]) -> list[bytes | None]:
    """Every table read whole, a request's worth at a time, through `ask`."""
    answers = []
    for fc, size, step in (
        (1, BITS, 2000),
        (2, BITS, 2000),
        (3, REGISTERS, 125),
        (4, REGISTERS, 125),
    ):
        for address in range(0, size, step):
            answers.append(ask(struct.pack(">BHH", fc, address, min(step, size - address))))
    return answers


def test_both_sides_still_hold_the_same_values(pair: tuple[PymodbusServer, Device]) -> None:
    """After 300 writes of every writing function code, answered alike on both sides (and
    whatever the tests above wrote), every table reads back the same from both; the writes
    changed the coils and holding registers (so the comparison is not of two fresh states)."""
    server, farm = pair
    for pdu in writes(seed=18, count=300):
        answer = farm.answer(1, pdu)
        assert answer is not None and answer[0] == pdu[0], pdu.hex()  # not an exception
        assert answer == server.ask(1, pdu), pdu.hex()
    held = tables(lambda pdu: farm.answer(1, pdu))
    assert held == tables(lambda pdu: server.ask(1, pdu))
    fresh = farm_device()
    before = tables(lambda pdu: fresh.answer(1, pdu))
    coils, holding = slice(0, 1), slice(2, 10)  # 1024 coils in one read; 8 of registers
    assert held[coils] != before[coils] and held[holding] != before[holding]


# Where the farm departs from pymodbus on purpose, following the Modbus Application Protocol
# spec v1.1b3 and the TCP implementation guide (farm/engine.py's docstring): the request,
# pymodbus 3.16's answer, the farm's answer.
DEPARTURES = {
    # pymodbus cannot decode these and answers exception 01 under function code 0x80.
    "quantity-zero-answers-03": (1, struct.pack(">BHH", 3, 0, 0), "8001", "8303"),
    "quantity-over-125-answers-03": (1, struct.pack(">BHH", 3, 0, 126), "8001", "8303"),
    "bits-over-2000-answers-03": (1, struct.pack(">BHH", 1, 0, 2001), "8001", "8103"),
    "short-body-answers-03": (1, bytes([3, 0, 0]), "8001", "8303"),
    "unknown-function-answers-01-under-its-own-code": (1, bytes([0x41, 0, 0]), "8001", "c101"),
    # pymodbus writes True for any value and echoes FF00.
    "write-coil-value-not-0-or-ff00-answers-03": (
        1,
        struct.pack(">BHH", 5, 1, 0x1234),
        "050001ff00",
        "8503",
    ),
    # The spec caps FC 15 at 0x7B0 coils (a frame's worth); pymodbus checks the address first.
    "write-coils-over-0x7b0-answers-03": (
        1,
        struct.pack(">BHHB", 15, 0, 1970, 247) + bytes(247),
        "8f02",
        "8f03",
    ),
    # pymodbus fails with a KeyError (exception 04) for a unit it does not have.
    "unknown-unit-answers-0b": (7, struct.pack(">BHH", 3, 0, 1), "8304", "830b"),
    # The TCP implementation guide (4.4.2): 0 and 0xFF address the server itself.
    "unit-0-is-the-device": (0, struct.pack(">BHH", 4, 0, 2), "8404", "04040003000a"),
    # 6.8: Return Query Data carries N x 2 bytes; pymodbus echoes an odd count.
    "echo-of-an-odd-count-answers-03": (1, bytes.fromhex("080000a5"), "080000a5", "8803"),
    "unit-255-is-the-device": (255, struct.pack(">BHH", 4, 0, 2), "8404", "04040003000a"),
}


@pytest.mark.parametrize("case", list(DEPARTURES), ids=list(DEPARTURES))
def test_named_departures_from_pymodbus(pair: tuple[PymodbusServer, Device], case: str) -> None:
    unit, pdu, pymodbus_answer, farm_answer = DEPARTURES[case]
    server, farm = pair
    assert server.ask(unit, pdu).hex() == pymodbus_answer
    answer = farm.answer(unit, pdu)
    assert answer is not None and answer.hex() == farm_answer


def test_identity_is_each_servers_own() -> None:
    """FC 43/14: pymodbus has one identity per process; each farm server names itself."""
    request = bytes([43, 14, 2, 0])  # regular: objects 0-6, 6 the server name
    named = Identity(user_application_name="{name}")
    first = Device("device-0001", farm_device().banks, named).answer(1, request)
    second = Device("device-0002", farm_device().banks, named).answer(1, request)
    assert first is not None and b"device-0001" in first
    assert second is not None and b"device-0002" in second


# -- 3. diagnostic and file functions -----------------------------------------------------


def both(server: PymodbusServer, requests: list[str]) -> tuple[list[str], list[str | None]]:
    """Each request to pymodbus's server and to a fresh farm device: both sides' answers."""
    farm = farm_device()
    theirs, ours = [], []
    for text in requests:
        pdu = bytes.fromhex(text)
        theirs.append(server.ask(1, pdu).hex())
        answer = farm.answer(1, pdu)
        ours.append(None if answer is None else answer.hex())
    return theirs, ours


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.binary(min_size=1, max_size=12).map(lambda half: half * 2))
def test_echo_answers_like_pymodbus(pair: tuple[PymodbusServer, Device], data: bytes) -> None:
    """FC 08/00 Return Query Data echoes N x 2 data bytes, on both (an odd count: a
    departure, above)."""
    theirs, ours = both(pair[0], ["080000" + data.hex()])
    assert theirs == ours


# Request sequences on which pymodbus follows the spec: every answer is the same.
AGREEMENTS = {
    "restart-communications-echoes": ["08 0001 0000", "08 0001 ff00"],
    "clear-counters-echoes": ["08 000a 0000"],
    "diagnostic-register-is-zero": ["08 0002 0000"],
    "clear-overrun-counter-echoes": ["08 0014 0000"],
    "event-counter-after-a-clear": ["08 000a 0000", "0b"],
    "write-file-record-echoes": ["15 0d 06 0004 0007 0003 06af 04be 100d"],
}


@pytest.mark.parametrize("case", list(AGREEMENTS), ids=list(AGREEMENTS))
def test_diagnostics_agreeing_with_pymodbus(pair: tuple[PymodbusServer, Device], case: str) -> None:
    theirs, ours = both(pair[0], AGREEMENTS[case])
    assert theirs == ours


# Where the farm follows the spec and pymodbus 3.16 does not: the requests (on a fresh
# device), then pymodbus's answer and the farm's to the last one (None: no answer).
DIAGNOSTIC_DEPARTURES: dict[str, tuple[list[str], str, str | None]] = {
    # 6.7: the exception status outputs (coils 0-7: 0, 3 and 6 are set), not a counters summary.
    "read-exception-status-reads-the-status-coils": (["07"], "0700", "0749"),
    # 6.8: the counters count what the device saw (pymodbus's server never counts).
    "bus-message-count-counts": (["03 0000 0001", "08 000b 0000"], "08000b0000", "08000b0002"),
    "exception-count-counts": (["03 ffff 0001", "08 000d 0000"], "08000d0000", "08000d0001"),
    # 6.8 sub-function 04: listen-only mode is entered without an answer.
    "force-listen-only-answers-nothing": (["08 0004 0000"], "080004", None),
    # 6.8: an unsupported sub-function is an illegal function (pymodbus fails with 04).
    "unsupported-sub-function-answers-01": (["08 0016 0000"], "8804", "8801"),
    # 6.9: the event counter counts normal answers (pymodbus: always 0).
    "event-counter-counts": (["08 000a 0000", "03 0000 0001", "0b"], "0b00000000", "0b00000001"),
    # 6.10: the log holds this request's receive event (80), then the clear's send and
    # receive (40 80); counted since the clear: no event finished, one message, this one
    # (pymodbus: no events, no counts).
    "comm-event-log-holds-events": (
        ["08 000a 0000", "0c"],
        "0c06000000000000",
        "0c09000000000001804080",
    ),
    # 6.13: server id, run indicator, then the name (pymodbus: its identity, then the indicator).
    "report-server-id-leads-with-the-server-id": (
        ["11"],
        "110950796d6f64627573ff",
        "110d01ff" + b"device-0000".hex(),
    ),
    # 6.14: the file's records (pymodbus: a dummy text for any file).
    "read-file-record-reads-the-file": (
        ["14 07 06 0004 0000 0002"],
        "141615065345525645522044554d4d59205245434f52442e",
        "1406050600000000",
    ),
    "read-file-record-of-a-missing-file-answers-02": (
        ["14 07 06 0009 0000 0002"],
        "141615065345525645522044554d4d59205245434f52442e",
        "9402",
    ),
    # 6.18: the FIFO's count and values from the registers (pymodbus: a dummy queue 0-3).
    "read-fifo-queue-reads-the-fifo": (["18 0000"], "18000a00040000000100020003", "1800020000"),
}


@pytest.mark.parametrize("case", list(DIAGNOSTIC_DEPARTURES), ids=list(DIAGNOSTIC_DEPARTURES))
def test_diagnostic_departures_from_pymodbus(
    pair: tuple[PymodbusServer, Device], case: str
) -> None:
    requests, pymodbus_answer, farm_answer = DIAGNOSTIC_DEPARTURES[case]
    theirs, ours = both(pair[0], requests)
    assert theirs[-1] == pymodbus_answer
    assert ours[-1] == farm_answer
