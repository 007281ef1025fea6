"""A server's diagnostics block: the state behind FC 08, 11 and 12, in its banks' segment.

Sits beside the banks under the engine (... worker -> engine -> diagnostics). farm.config.plan
gives every server a block after the tables of its template block, so a worker that is killed
and replaced keeps listen-only mode, the counters and the event log, as it keeps register
values. Only the worker's farm.worker.diagnostics reads and writes a block.

Most counters are not counted here: they derive from the server's counters in farm.ipc.stats
(requests, exceptions by code, malformed frames, CRC errors, unanswered requests), which
every request moves anyway, minus a baseline stored here when a client clears them (FC 08
sub-functions 01 and 0A). A request with nothing unusual about it costs the diagnostics
nothing, and the event log does not store its two events either: they are counted as
"answers since the log was last written" and added when the log is read or written.

Layout: uint64 slots in native byte order, then the event log.

    FLAGS                bit 0: listen-only mode (FC 08/04; only 08/01 ends it)
    BASE_MESSAGES ...    the sources of the derived counters at the last clear
    NOT_ADDRESSED        RTU frames for a unit id the device does not have (a counter)
    OVERRUN              RTU frames longer than 256 bytes (a counter)
    LOGGED_ANSWERS       normal answers already accounted for in the event log
    LOG_HEAD, LOG_COUNT  where the ring writes next, how many events it holds (at most 64)
    LOG                  64 event bytes, a ring (FC 12 reads it newest first)

`power_up` puts a block back as a power cycle leaves a device (the master does it for a
reboot fault): counters cleared, the event log empty, listen-only mode off.
"""

from __future__ import annotations

from farm.config.plan import DIAGNOSTICS_BYTES
from farm.ipc.stats import (
    CRC_ERRORS,
    DURATION,
    EXCEPTION_SLOT,
    EXCEPTIONS,
    MALFORMED_FRAMES,
    REQUEST_SLOT,
    REQUESTS,
    UNANSWERED,
)

FLAGS = 0
BASE_MESSAGES = 1
BASE_EXCEPTIONS = 2
BASE_COMM_ERRORS = 3
BASE_NAK = 4
BASE_BUSY = 5
BASE_EVENTS = 6
BASE_NO_RESPONSE = 7
BASE_NOT_ADDRESSED = 8
BASE_OVERRUN = 9
NOT_ADDRESSED = 10
OVERRUN = 11
LOGGED_ANSWERS = 12
LOG_HEAD = 13
LOG_COUNT = 14
SLOTS = 15

LISTEN_ONLY = 0x01  # in FLAGS
LOG_OFFSET = 8 * SLOTS
LOG_SIZE = 64
BLOCK_BYTES = LOG_OFFSET + LOG_SIZE
assert BLOCK_BYTES <= DIAGNOSTICS_BYTES, "the block outgrew the room farm.config.plan leaves"


def views(block: memoryview) -> tuple[memoryview, memoryview]:
    """(slots, event log) of a server's block."""
    return block[:LOG_OFFSET].cast("Q"), block[LOG_OFFSET:BLOCK_BYTES]


def local_block() -> memoryview:
    """A block that lives in this process only (a Device outside a farm)."""
    return memoryview(bytearray(BLOCK_BYTES))


def requests(counters: memoryview) -> int:
    """Every request the server counted (a server's slots of farm.ipc.stats)."""
    return sum(counters[REQUESTS:EXCEPTIONS])


def exceptions(counters: memoryview) -> int:
    return sum(counters[EXCEPTIONS:DURATION])


def answers(counters: memoryview) -> int:
    """Requests answered normally (not with an exception, not with silence)."""
    return requests(counters) - exceptions(counters) - counters[UNANSWERED]


def sources(counters: memoryview, slots: memoryview) -> dict[int, int]:
    """Each baseline slot's source as it is now: a clear stores these."""
    return {
        BASE_MESSAGES: requests(counters),
        BASE_EXCEPTIONS: exceptions(counters),
        BASE_COMM_ERRORS: counters[MALFORMED_FRAMES] + counters[CRC_ERRORS],
        BASE_NAK: counters[EXCEPTION_SLOT[7]],
        BASE_BUSY: counters[EXCEPTION_SLOT[6]],
        BASE_EVENTS: answers(counters) - counters[REQUEST_SLOT[11]],
        BASE_NO_RESPONSE: counters[UNANSWERED] - slots[NOT_ADDRESSED],
        BASE_NOT_ADDRESSED: slots[NOT_ADDRESSED],
        BASE_OVERRUN: slots[OVERRUN],
    }


def power_up(block: memoryview, counters: memoryview) -> None:
    """The block as after a power cycle: counters cleared, no events, not listen-only."""
    slots, _ = views(block)
    for slot, value in sources(counters, slots).items():
        slots[slot] = value
    slots[FLAGS] = 0
    slots[LOG_COUNT] = 0
    slots[LOGGED_ANSWERS] = answers(counters)
