"""FC 07, 08, 11, 12, 17, 20, 21 and 24 of one device, against the Modbus Application
Protocol spec v1.1b3's own examples and definitions (section numbers in each test)."""

from __future__ import annotations

import struct

import pytest

from farm.config.templates import Identity
from farm.ipc import stats
from farm.ipc.banks import UnitBank
from farm.worker.engine import Device
from farm.worker.framing import answer_serial


def bank(unit_id: int = 1) -> UnitBank:
    return UnitBank(
        unit_id=unit_id,
        coils=memoryview(bytearray(100)),
        discrete_inputs=memoryview(bytearray(100)),
        holding_registers=memoryview(bytearray(2 * 1300)),
        input_registers=memoryview(bytearray(200)),
    )


def device(name: str = "meter-7") -> Device:
    files = {3: memoryview(bytearray(2 * 20)), 4: memoryview(bytearray(2 * 10))}
    struct.pack_into(">2H", files[3], 2 * 9, 0x33CD, 0x0040)
    struct.pack_into(">2H", files[4], 2 * 1, 0x0DFE, 0x0020)
    return Device(
        name,
        {1: bank(1), 2: bank(2)},
        Identity(server_id=0x4D),
        files=files,
        fifos=[(1, 0x04DE)],
        exception_status_coil=10,
    )


def ask(dev: Device, pdu: str, unit: int = 1) -> str | None:
    answer = dev.answer(unit, bytes.fromhex(pdu))
    return None if answer is None else answer.hex()


def counter(dev: Device, sub: int) -> int:
    answer = dev.answer(1, struct.pack(">BHH", 8, sub, 0))
    assert answer is not None and answer[:3] == struct.pack(">BH", 8, sub)
    return int(struct.unpack(">H", answer[3:5])[0])


def test_read_exception_status_example() -> None:
    """6.7: the eight status outputs packed in one byte, lowest output least significant;
    the spec's answer 6D, from the template's coils 10-17."""
    dev = device()
    assert ask(dev, "0f 000a 0008 01 6d") == "0f000a0008"
    assert ask(dev, "07") == "076d"
    assert ask(dev, "07", unit=2) == "0700"  # the addressed unit's coils


def test_echo_example() -> None:
    """6.8 sub-function 00: the spec's request 08 0000 A537 comes back as it went."""
    assert ask(device(), "08 0000 a537") == "080000a537"
    assert ask(device(), "08 0000 0102030405 06") == "0800000102030405" + "06"
    # N x 2 data bytes, N >= 1: an odd count (or none) answers 03.
    assert ask(device(), "08 0000 0102030405") == "8803"
    assert ask(device(), "08 0000") == "8803"


def test_counters_count_what_the_device_saw() -> None:
    """6.8 sub-functions 0B-12, after a clear (0A): each counter's own definition."""
    dev = device()
    assert ask(dev, "08 000a 0000") == "08000a0000"
    ask(dev, "03 0000 0002")  # normal
    ask(dev, "03 ffff 0002")  # exception 02
    ask(dev, "41")  # exception 01
    ask(dev, "03 0000 0001", unit=9)  # exception 0B: another unit behind this gateway
    assert counter(dev, 0x0B) == 5  # every message, this request too
    assert counter(dev, 0x0C) == 0  # no frame it could not read
    assert counter(dev, 0x0D) == 3  # exceptions sent
    assert counter(dev, 0x0E) == 8  # messages for it, the counter requests included
    assert counter(dev, 0x0F) == 0
    assert counter(dev, 0x10) == 0 and counter(dev, 0x11) == 0 and counter(dev, 0x12) == 0
    assert ask(dev, "08 000a 0000") == "08000a0000"
    assert counter(dev, 0x0B) == 1


def test_bad_sub_functions_and_data() -> None:
    """6.8's state diagram: an unsupported sub-function 01, a bad data field 03."""
    dev = device()
    assert ask(dev, "08 0003 4100") == "8801"  # ASCII delimiter: no ASCII here
    assert ask(dev, "08 0015 0000") == "8801"
    assert ask(dev, "08 000b 0001") == "8803"
    assert ask(dev, "08 0001 1234") == "8803"
    assert ask(dev, "08 00") == "8803"
    assert ask(dev, "08 0002 0000") == "0800020000"  # the diagnostic register: nothing set


def test_listen_only_until_restart() -> None:
    """6.8 sub-functions 04 and 01: no answer in listen-only mode, no action either (a write
    does not land); only a restart ends it, and answers nothing itself."""
    dev = device()
    assert ask(dev, "08 0004 0000") is None
    assert ask(dev, "06 0001 0007") is None
    assert ask(dev, "03 0001 0001") is None
    assert ask(dev, "08 0001 0000") is None
    assert ask(dev, "03 0001 0001") == "03020000"  # the write above was never made
    assert counter(dev, 0x0F) == 0  # the restart cleared the counters


def test_comm_event_counter() -> None:
    """6.9: normal answers since the last clear, not FC 11's own nor exceptions; status 0."""
    dev = device()
    ask(dev, "08 000a 0000")
    assert ask(dev, "0b") == "0b00000000"
    ask(dev, "03 0000 0001")
    ask(dev, "03 0000 0001")
    ask(dev, "41")
    assert ask(dev, "0b") == "0b00000002"


def test_comm_event_log() -> None:
    """6.10: status, event count, message count, events newest first: a receive (80) and a
    send event (40, +01 for exception 01-03) per request, 04 entering listen-only mode,
    00 a restart, 20 set in listen-only mode."""
    dev = device()
    ask(dev, "08 0001 ff00")  # restart, clearing the log: it holds 00
    ask(dev, "03 0000 0001")
    ask(dev, "03 ffff 0001")
    answer = ask(dev, "0c")
    assert answer is not None
    count, status, events, messages = struct.unpack(">BHHH", bytes.fromhex(answer[2:16]))
    log = bytes.fromhex(answer[16:])
    assert (status, events, messages) == (0, 1, 3)
    assert count == 6 + len(log)
    # newest first: this request's receive; the exception; the normal read; the restart
    assert log == bytes([0x80, 0x41, 0x80, 0x40, 0x80, 0x00])
    ask(dev, "08 0004 0000")
    ask(dev, "03 0000 0001")
    ask(dev, "08 0001 0000")
    answer = ask(dev, "0c")
    assert answer is not None
    # the restart (00) ended listen-only mode, in which two requests were received (A0) and
    # left unanswered (60); before them, 04 entering it, after the 08/04 request's receive
    assert bytes.fromhex(answer[16:])[:8] == bytes([0x80, 0x00, 0x60, 0xA0, 0x60, 0xA0, 0x04, 0x80])


def test_report_server_id() -> None:
    """6.13: server id, run indicator FF, then the device's name."""
    assert ask(device("meter-7"), "11") == "11094dff" + b"meter-7".hex()


def test_read_file_record_example() -> None:
    """6.14: the spec's request for file 4 records 1-2 and file 3 records 9-10."""
    dev = device()
    request = "14 0e 06 0004 0001 0002 06 0003 0009 0002"
    assert ask(dev, request) == "140c05060dfe0020050633cd0040"
    assert ask(dev, "14 07 06 0005 0000 0001") == "9402"  # no file 5
    assert ask(dev, "14 07 06 0004 0009 0002") == "9402"  # past its end
    assert ask(dev, "14 07 05 0004 0000 0001") == "9402"  # reference type 5
    assert ask(dev, "14 06 06 0004 0000 01") == "9403"  # byte count under 7
    assert ask(dev, "14 07 06 0004 0000 0000") == "9403"  # no records


def test_write_file_record_example() -> None:
    """6.15: the spec's request writes file 4 records 7-9 and echoes; all or nothing."""
    dev = device()
    request = "15 0d 06 0004 0007 0003 06af 04be 100d"
    assert ask(dev, request) == request.replace(" ", "")
    assert ask(dev, "14 07 06 0004 0007 0003") == "140807" + "06" + "06af04be100d"
    bad_second = "15 12 06 0004 0000 0001 1111 06 0009 0000 0001 2222"
    assert ask(dev, bad_second) == "9502"  # file 9 does not exist: file 4 is not touched
    assert ask(dev, "14 07 06 0004 0000 0001") == "140403060000"


def test_read_fifo_queue_example() -> None:
    """6.18: the spec's FIFO at 04DE holds 01B8 and 1284."""
    dev = device()
    assert ask(dev, "10 04de 0003 06 0002 01b8 1284") == "1004de0003"
    assert ask(dev, "18 04de") == "1800060002" + "01b81284"
    assert ask(dev, "18 04de") == "1800060002" + "01b81284"  # reading does not empty it
    assert ask(dev, "18 0001") == "9802"  # not a FIFO
    assert ask(dev, "06 04de 0020") == "0604de0020"
    assert ask(dev, "18 04de") == "9803"  # a count over 31


@pytest.mark.parametrize("unit", [0, 5])
def test_serial_addressing(unit: int) -> None:
    """On an RTU line a broadcast (unit 0) writes every unit and is not answered; a frame
    for another unit id is seen, not answered and not acted on."""
    dev = device()
    assert answer_serial(dev, unit, bytes.fromhex("06 0003 0042")) is None
    read = dev.answer(2, bytes.fromhex("03 0003 0001"))
    assert read is not None and read.hex() == ("03020042" if unit == 0 else "03020000")
    assert counter(dev, 0x0B) == 3  # the write, the read, this request
    assert counter(dev, 0x0E) == (4 if unit == 0 else 3)  # and the one before
    assert counter(dev, 0x0F) == (1 if unit == 0 else 0)
    assert dev.counters[stats.UNANSWERED] == 1
