"""How answers are framed: MBAP (the engine's, TCP, TLS and UDP) and RTU over TCP, a serial
device behind a terminal server, one RTU frame after another; and what a garble fault does
to each (`MbapFraming`, `RtuFraming`: farm.worker.faults.hooks builds faulted answers with them).

Sits below the connections in a worker (... connection -> framing -> engine -> banks), which
are farm.worker.transports.connection's (MBAP) and farm.worker.transports.rtu_over_tcp's. An RTU
frame is the unit
id, the PDU and its CRC-16 (farm.modbus.rtu tells its length from its content, as a serial line's
silences cannot cross TCP). The device behaves as a serial one does:
  - a frame whose CRC does not match is ignored, with every byte after it up to this read's
    end (a serial device skips to the next silence), and counted (`CRC_ERRORS`, FC 08/0C);
  - unit id 0 is a broadcast: FC 5, 6, 15, 16 and FC 08/01, 04, 0A act on every unit, and
    nothing is answered;
  - a frame for a unit id the device lacks is read and left unanswered (another device on
    the line would answer it), not answered with exception 0B as a gateway would;
  - more than 256 bytes with no frame in them is an overrun (FC 08/12): dropped.
A garble fault on an RTU answer leaves a CRC that does not match (`RtuFraming.garble`): a
master drops it, as it would a frame hit by noise on the line.
"""

from __future__ import annotations

import random
import struct
from bisect import bisect_left
from typing import TYPE_CHECKING, Protocol

from farm.ipc.stats import (
    DURATION,
    DURATION_BOUNDS_NS,
    DURATION_SUM_NS,
    FIRST_BOUND_NS,
    REQUEST_SLOT,
)
from farm.modbus import mbap, rtu
from farm.worker.fastpath import fast_answer

if TYPE_CHECKING:
    from farm.worker.engine import Device

_NO_FUNCTION = (0, *range(44, 65), *range(73, 100))  # unassigned in the spec (v1.1b3, 5.1)
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


class Framing(Protocol):
    """How a transport answers a request and frames the answer (`header`: MBAP's
    transaction id; RTU has none), and what a garble fault does to a framed answer."""

    def answer(self, device: Device, unit: int, pdu: bytes) -> bytes | None: ...

    def encode(self, header: int, unit: int, answer: bytes) -> bytes: ...

    def garble(self, frame: bytes, mode: str, rng: random.Random) -> bytes: ...


class MbapFraming:
    """Modbus/TCP's framing (and TLS's)."""

    def answer(self, device: Device, unit: int, pdu: bytes) -> bytes | None:
        return device.answer(unit, pdu)

    def encode(self, header: int, unit: int, answer: bytes) -> bytes:
        return mbap.frame(header, unit, answer)

    def garble(self, frame: bytes, mode: str, rng: random.Random) -> bytes:
        if mode == "truncate":  # the header promises more than comes
            return frame[: len(frame) - max(1, (len(frame) - 7) // 2)]
        if mode == "length":  # one byte short: the last byte reads as the next frame's start
            length = (frame[4] << 8) | frame[5]
            return frame[:4] + struct.pack(">H", length - 1) + frame[6:]
        # Random bytes, but the function code is one no answer can carry (0, or a code the
        # spec leaves unassigned): random bytes can otherwise read as a valid exception.
        function_code = bytes((rng.choice(_NO_FUNCTION),))
        return frame[:7] + function_code + rng.randbytes(len(frame) - 8)


class RtuFraming:
    """RTU over TCP: serial addressing, the unit id and CRC-16 around each answer."""

    def answer(self, device: Device, unit: int, pdu: bytes) -> bytes | None:
        return answer_serial(device, unit, pdu)

    def encode(self, header: int, unit: int, answer: bytes) -> bytes:
        return rtu.frame(unit, answer)

    def garble(self, frame: bytes, mode: str, rng: random.Random) -> bytes:
        """Every garbled RTU answer ends with a CRC that does not match its bytes: cut in
        half (truncate), one byte short (length), or its data replaced (random)."""
        if mode == "truncate":
            return frame[: max(2, len(frame) // 2)]
        if mode == "length":
            return frame[:-1]
        body = frame[:2] + rng.randbytes(len(frame) - 4)
        wrong = rtu.crc(body) ^ 0xFFFF
        return body + bytes((wrong & 0xFF, wrong >> 8))


MBAP = MbapFraming()
RTU = RtuFraming()


def record_duration(counters: memoryview, answered: int, took: int) -> None:
    """Count `answered` answers that took `took` ns (the engine does this inline)."""
    bucket = 0 if took <= FIRST_BOUND_NS else bisect_left(DURATION_BOUNDS_NS, took)
    counters[DURATION + bucket] += answered
    counters[DURATION_SUM_NS] += answered * took
