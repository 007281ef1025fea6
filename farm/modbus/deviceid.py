"""Read Device Identification (FC 43, MEI type 14; Application Protocol v1.1b3, 6.21): the
answer to a request, split over as many answers as the objects need.

Pure wire format (farm.worker.engine answers with it, the tests read answers with `objects`);
imports nothing of the farm. Objects are ASCII strings by id: 0x00-0x02 basic (mandatory),
0x03-0x06 regular (optional), 0x80-0xFF extended (optional, the device's own). Read codes:
1, 2, 3 stream access to the basic, regular, extended category, from the object asked for
(one the device lacks restarts at object 0); 4 individual access, exactly one object, More
Follows 00 (an object the device lacks: exception 02). Conformity level 0x82 (regular,
stream and individual access), 0x83 when the device has extended objects.
"""

from __future__ import annotations

from collections.abc import Mapping

FUNCTION = 43
MEI_TYPE = 14
BASIC, REGULAR, EXTENDED, INDIVIDUAL = 1, 2, 3, 4
MAX_PDU = 253  # 4.1: 256 bytes of serial frame less the address and the CRC
HEAD = 7  # function code, MEI type, read code, conformity, more follows, next id, count
MAX_OBJECT = MAX_PDU - HEAD - 2  # one object's value: what one answer holds after its id, length
FIRST_EXTENDED = 0x80
_LAST = {BASIC: 0x02, REGULAR: 0x7F, EXTENDED: 0xFF}
_ILLEGAL_ADDRESS, _ILLEGAL_VALUE = 0x02, 0x03


def conformity(objects: Mapping[int, bytes]) -> int:
    """0x83 (extended, stream and individual) when any extended object exists, else 0x82."""
    return 0x83 if any(oid >= FIRST_EXTENDED for oid in objects) else 0x82


def request(read_code: int, object_id: int = 0) -> bytes:
    return bytes((FUNCTION, MEI_TYPE, read_code, object_id))


def answer(objects: Mapping[int, bytes], read_code: int, object_id: int) -> bytes:
    """The answer PDU to `2B 0E read_code object_id`; objects' values at most `MAX_OBJECT`
    bytes each (the config refuses longer ones)."""
    level = conformity(objects)
    if read_code == INDIVIDUAL:
        value = objects.get(object_id)
        if value is None:
            return bytes((FUNCTION | 0x80, _ILLEGAL_ADDRESS))
        return _head(read_code, level, 0, 0, 1) + bytes((object_id, len(value))) + value
    last = _LAST.get(read_code)
    if last is None:
        return bytes((FUNCTION | 0x80, _ILLEGAL_VALUE))
    ids = sorted(oid for oid in objects if oid <= last)
    if object_id not in ids:
        object_id = 0  # 6.21: an object id the device lacks restarts the stream at 0
    body, count, more, following = bytearray(), 0, 0, 0
    for oid in ids:
        if oid < object_id:
            continue
        value = objects[oid]
        if HEAD + len(body) + 2 + len(value) > MAX_PDU:
            more, following = 0xFF, oid
            break
        body += bytes((oid, len(value))) + value
        count += 1
    return _head(read_code, level, more, following, count) + bytes(body)


def _head(read_code: int, level: int, more: int, following: int, count: int) -> bytes:
    return bytes((FUNCTION, MEI_TYPE, read_code, level, more, following, count))


def objects(answer_pdu: bytes) -> tuple[dict[int, bytes], int, int]:
    """A 43/14 answer's objects, More Follows and Next Object Id."""
    found: dict[int, bytes] = {}
    position = HEAD
    for _ in range(answer_pdu[6]):
        oid, length = answer_pdu[position], answer_pdu[position + 1]
        found[oid] = answer_pdu[position + 2 : position + 2 + length]
        position += 2 + length
    return found, answer_pdu[4], answer_pdu[5]


def length(frame: bytes | bytearray, start: int) -> int:
    """The length of the answer PDU at `start`, or 0 while too few bytes tell it."""
    position = start + HEAD
    if len(frame) < position:
        return 0
    for _ in range(frame[start + 6]):
        if len(frame) < position + 2:
            return 0
        position += 2 + frame[position + 1]
    return position - start
