"""RTU framing arithmetic, shared by the worker's framer and the load generator: the CRC-16
and how long a frame is.

Used by every program that speaks RTU over TCP (farm.worker.transports.rtu_over_tcp serves
it, farm.bench loads with it, the tests read answers with it); imports nothing of the farm.
An RTU frame is the unit id, the PDU and the CRC-16/MODBUS of both, low byte first. On a
serial line a frame ends at a silence of 3.5 characters (Modbus over Serial Line v1.02,
2.5.1.1); a TCP stream keeps no silences, so a frame's length is told from its content, as a
serial device also knows it: fixed for most function codes, else a byte count at a known
place (`request_length`, `response_length`). The CRC checks a frame; it is not its
delimiter. Two requests carry no count:
  - FC 08 sub-function 00 (Return Query Data) echoes N x 2 data bytes (Application
    Protocol v1.1b3, 6.8): its frame is the first even length from 8 whose CRC matches
    (`echo_end`); two data bytes, the usual heartbeat, always end at 8;
  - a function code the farm does not know: the first length whose CRC matches
    (`search_end`), and the device answers 01.
A frame whose counts and CRC disagree (a wrong byte count) is found again by
`search_end`, the shortest prefix whose CRC matches, when the bytes after it arrive or at a
silence (the worker's connection decides which), and answered 03.

The CRC comes from fastcrc (Rust): 80 ns for a 25-byte frame, where a table-driven loop
in Python takes 1.1 us, twice per request.
"""

from __future__ import annotations

from fastcrc import crc16

MAX_FRAME = 256  # unit id, PDU of at most 253 bytes, CRC
MIN_FRAME = 4  # unit id, function code, CRC
NEED_MORE = 0  # the content does not tell yet: wait for more bytes
SEARCH = -1  # the content never tells: find the end by the CRC (`search_end`)
ECHO = -2  # FC 08/00: N x 2 data bytes, the end found by the CRC at even lengths (`echo_end`)
ECHO_MIN = 8  # unit id, 08, sub-function 00 00, two data bytes, CRC

# Whole request frames (unit id to CRC) by function code; 0: the length depends on the content.
_FIXED_REQUEST = bytearray(256)
for _code, _length in ((1, 8), (2, 8), (3, 8), (4, 8), (5, 8), (6, 8), (7, 4), (11, 4)):
    _FIXED_REQUEST[_code] = _length
for _code, _length in ((12, 4), (17, 4), (22, 10), (24, 6)):
    _FIXED_REQUEST[_code] = _length
FIXED_REQUEST = bytes(_FIXED_REQUEST)
# (offset of the byte count, bytes besides the counted ones) for requests that carry one.
_COUNTED_REQUEST = {15: (6, 9), 16: (6, 9), 20: (2, 5), 21: (2, 5), 23: (10, 13)}
# Responses: fixed lengths, and those with a byte count at offset 2.
_FIXED_RESPONSE = {5: 8, 6: 8, 7: 5, 11: 8, 15: 8, 16: 8, 22: 10}
_COUNTED_RESPONSE = frozenset({1, 2, 3, 4, 12, 17, 20, 21, 23})
_DEVICE_ID_HEAD = 8  # unit id, 2B 0E, read code, conformity, more follows, next id, count


def crc(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/MODBUS of `data`, as an integer (it goes on the wire low byte first)."""
    value: int = crc16.modbus(data)
    return value


def frame(unit: int, pdu: bytes) -> bytes:
    """The RTU frame of a PDU for `unit`."""
    body = bytes((unit,)) + pdu
    value = crc16.modbus(body)
    return body + bytes((value & 0xFF, value >> 8))


def crc_ok(buffer: bytes | bytearray, start: int, end: int) -> bool:
    """Whether the frame buffer[start:end] ends with the CRC of what precedes it."""
    value = crc16.modbus(buffer[start : end - 2])
    return buffer[end - 2] == value & 0xFF and buffer[end - 1] == value >> 8


def request_length(buffer: bytes | bytearray, start: int) -> int:
    """Length of the request frame at `start` (function code at start + 1), NEED_MORE, ECHO
    or SEARCH. May exceed MAX_FRAME (a byte count no real request has): the caller refuses
    it."""
    available = len(buffer) - start
    fc = buffer[start + 1]
    fixed = FIXED_REQUEST[fc]
    if fixed:
        return fixed
    counted = _COUNTED_REQUEST.get(fc)
    if counted is not None:
        where, extra = counted
        return buffer[start + where] + extra if available > where else NEED_MORE
    if fc == 8:  # sub-function 00 (echo) carries N x 2 data bytes; the others two bytes
        if available < 4:
            return NEED_MORE
        return ECHO if buffer[start + 2] == 0 and buffer[start + 3] == 0 else 8
    if fc == 43:  # 43/14 Read Device Identification: MEI type, read code, object id
        if available < 3:
            return NEED_MORE
        return 7 if buffer[start + 2] == 14 else SEARCH
    return SEARCH


def echo_end(buffer: bytes | bytearray, start: int) -> int:
    """The end of the FC 08/00 frame at `start`: the first even length from `ECHO_MIN` whose
    CRC matches, or NEED_MORE."""
    last = min(len(buffer), start + MAX_FRAME)
    for end in range(start + ECHO_MIN, last + 1, 2):
        if crc_ok(buffer, start, end):
            return end - start
    return NEED_MORE


def search_end(buffer: bytes | bytearray, start: int, shortest: int = MIN_FRAME) -> int:
    """The end of the first frame at `start` whose CRC matches, or NEED_MORE."""
    last = min(len(buffer), start + MAX_FRAME)
    for end in range(start + shortest, last + 1):
        if crc_ok(buffer, start, end):
            return end - start
    return NEED_MORE


def response_length(buffer: bytes | bytearray, start: int) -> int:
    """Length of the response frame at `start`, NEED_MORE, ECHO or SEARCH."""
    available = len(buffer) - start
    if available < 3:
        return NEED_MORE
    fc = buffer[start + 1]
    if fc & 0x80:
        return 5
    fixed = _FIXED_RESPONSE.get(fc)
    if fixed is not None:
        return fixed
    if fc in _COUNTED_RESPONSE:
        return buffer[start + 2] + 5
    if fc == 8:  # an echo (sub-function 00) answers all the data it was sent
        if available < 4:
            return NEED_MORE
        return ECHO if buffer[start + 2] == 0 and buffer[start + 3] == 0 else 8
    if fc == 24:  # FIFO: a two-byte byte count
        return ((buffer[start + 2] << 8) | buffer[start + 3]) + 6 if available >= 4 else NEED_MORE
    if fc == 43 and buffer[start + 2] == 14:
        return _device_id_length(buffer, start)
    return SEARCH


def _device_id_length(buffer: bytes | bytearray, start: int) -> int:
    """A 43/14 answer: its objects' lengths, one after another, then the CRC."""
    position = start + _DEVICE_ID_HEAD
    if len(buffer) < position:
        return NEED_MORE
    for _ in range(buffer[position - 1]):
        if len(buffer) < position + 2:
            return NEED_MORE
        position += 2 + buffer[position + 1]
    return position + 2 - start


def frame_end(buffer: bytes | bytearray, start: int, length: int) -> int:
    """Resolve ECHO and SEARCH from `request_length`/`response_length` to a length (or
    NEED_MORE); any other value is returned as it is."""
    if length == ECHO:
        return echo_end(buffer, start)
    if length == SEARCH:
        return search_end(buffer, start)
    return length
