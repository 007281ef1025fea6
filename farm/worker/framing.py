"""RTU over TCP: a serial device behind a terminal server, one RTU frame after another.

Sits beside the engine in a worker (... worker -> framing -> engine -> banks). A frame is
the unit id, the PDU and its CRC-16 (farm.rtu tells its length from its content, as a
serial line's silences cannot cross TCP). The device behaves as a serial one does:
  - a frame whose CRC does not match is ignored, with every byte after it up to this read's
    end (a serial device skips to the next silence), and counted (`CRC_ERRORS`, FC 08/0C);
  - unit id 0 is a broadcast: FC 5, 6, 15, 16 and FC 08/01, 04, 0A act on every unit, and
    nothing is answered;
  - a frame for a unit id the device lacks is read and left unanswered (another device on
    the line would answer it), not answered with exception 0B as a gateway would;
  - more than 256 bytes with no frame in them is an overrun (FC 08/12): dropped.
Frames pipelined in one read are all answered, in order, with one write. A frame's answer
is encoded in `encode`, the one place a garble fault corrupts an RTU answer's CRC.
"""

from __future__ import annotations

from bisect import bisect_left
from time import perf_counter_ns

from farm import rtu
from farm.ipc.stats import (
    BYTES_RECEIVED,
    BYTES_SENT,
    CRC_ERRORS,
    DURATION,
    DURATION_BOUNDS_NS,
    DURATION_SUM_NS,
    FIRST_BOUND_NS,
    REQUEST_SLOT,
)
from farm.worker.engine import Device, ModbusConnection
from farm.worker.fastpath import fast_answer

BROADCAST_UNIT = 0
BROADCAST_WRITES = frozenset({5, 6, 15, 16})
BROADCAST_DIAGNOSTICS = (b"\x08\x00\x01", b"\x08\x00\x04", b"\x08\x00\x0a")


def answer_serial(device: Device, unit: int, pdu: bytes) -> bytes | None:
    """A request as a device on a serial line takes it: broadcasts and other devices'
    frames are acted on (or not) and never answered."""
    if unit != BROADCAST_UNIT and unit in device.banks:
        return device.answer(unit, pdu)
    device.counters[REQUEST_SLOT[pdu[0]]] += 1
    diagnostics = device.diagnostics
    if unit != BROADCAST_UNIT:
        diagnostics.not_addressed()
    elif diagnostics.listen_only:
        diagnostics.unanswered(pdu)
    else:
        if pdu[0] in BROADCAST_WRITES:
            for unit_id, bank in device.banks.items():
                if unit_id == bank.unit_id:  # each unit once, not again as its 0xFF alias
                    fast_answer(bank, pdu)  # all four are fast-path codes
        elif pdu[:3] in BROADCAST_DIAGNOSTICS:
            diagnostics.answer(next(iter(device.banks.values())), pdu)
        diagnostics.broadcast()
    return None


def encode(unit: int, response: bytes) -> bytes:
    """An answer's RTU frame: where a garble fault would corrupt the CRC."""
    return rtu.frame(unit, response)


class RtuConnection(ModbusConnection):
    """One client connection to one device, speaking RTU frames over TCP."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        arrived = perf_counter_ns()
        device = self.device
        counters = device.counters
        counters[BYTES_RECEIVED] += len(data)
        buffer = self.buffer
        buffer += data
        replies: list[bytes] = []
        position = 0
        available = len(buffer)
        while available - position >= rtu.MIN_FRAME:
            length = rtu.FIXED_REQUEST[buffer[position + 1]] or rtu.request_length(buffer, position)
            if length == rtu.SEARCH:
                length = rtu.search_end(buffer, position)
            if length > rtu.MAX_FRAME or (
                length == rtu.NEED_MORE and available - position >= rtu.MAX_FRAME
            ):
                device.diagnostics.overrun()  # no frame can be this long: drop it all
                position = available
                break
            if length == rtu.NEED_MORE or position + length > available:
                break
            end = position + length
            if not rtu.crc_ok(buffer, position, end):
                counters[CRC_ERRORS] += 1
                position = available  # skip to the next "silence": the end of this read
                break
            unit = buffer[position]
            response = answer_serial(device, unit, bytes(buffer[position + 1 : end - 2]))
            if response is not None:
                replies.append(encode(unit, response))
            position = end
        del buffer[:position]
        if replies and self.transport is not None:
            out = b"".join(replies)
            self.transport.write(out)
            counters[BYTES_SENT] += len(out)
            record_duration(counters, len(replies), perf_counter_ns() - arrived)


def record_duration(counters: memoryview, answered: int, took: int) -> None:
    """Count `answered` answers that took `took` ns (the engine does this inline)."""
    bucket = 0 if took <= FIRST_BOUND_NS else bisect_left(DURATION_BOUNDS_NS, took)
    counters[DURATION + bucket] += answered
    counters[DURATION_SUM_NS] += answered * took
