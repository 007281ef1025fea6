"""What every server counted, in shared memory the master owns: the engine writes, the
master's /metrics reads.

Sits beside the banks under the engine (... worker -> engine -> banks, stats -> metrics).
The master creates one segment per shard next to the shard's bank segment and keeps it
for the life of the farm; the worker attaches by name (`Assign.stats_segment`) and counts
with plain integer stores, never through prometheus_client. Because the master owns the
memory, no counter goes backwards when a worker is killed and replaced: the new worker
carries on from what the old one left. Only the open-connections gauge is reset then, by
the master when it reaps the dead worker (before it spawns the next): those connections died
with the process. A worker writes no server's counters before that server is used, so the
pages of idle servers' counters are not in its memory.

Layout: uint64 slots in native byte order. `HEADER_SLOTS` for the worker, then
`SERVER_SLOTS` per server, at its `ServerSpec.stats_index` (farm.config.plan: a server keeps
its counters whoever joins or leaves the shard; a free index is all zeros):

    REQUEST_SLOT[fc]        requests with function code fc, one slot per code in
                            FUNCTION_CODES and one for every other code
    EXCEPTION_SLOT[code]    exception responses, one slot per code in EXCEPTION_CODES and
                            one for every other code
    DURATION + i            requests that took at most DURATION_BOUNDS_NS[i], the last slot
                            for those above every bound; not cumulative (the renderer sums)
    DURATION_SUM_NS         the durations added up, in nanoseconds
    CONNECTIONS_OPEN        a gauge; every other slot is a counter
    CONNECTIONS_ACCEPTED, BYTES_RECEIVED, BYTES_SENT, MALFORMED_FRAMES
    INJECTIONS + i          requests (or, for offline and reboot, outages) a fault of kind
                            farm.config.faults.kinds.KINDS[i] acted on; INJECTION_SLOT[kind]
    CRC_ERRORS              RTU frames whose CRC did not match (ignored, as on a serial line)
    UNANSWERED              requests answered with silence by design: listen-only mode,
                            broadcasts, RTU frames for another unit id, UDP datagrams
                            dropped while a fault holds too many answers back
    TLS_HANDSHAKE_FAILURES  TLS clients refused (no or a bad certificate, wrong protocol)
    CLOSED + i              connections the farm closed for reason CLOSE_REASONS[i]

A request's duration runs from the moment its bytes reached the connection to the moment
its response was handed to the kernel; requests pipelined in one read share one duration.
The worker's header holds `WORKER_CPU_NS`: CPU time of every incarnation of the shard's
worker so far, so it is a counter across restarts too (the time a killed worker spent
after its last heartbeat is lost; it never runs backwards). Then the role table: TLS sessions
by the role their client's certificate names (`ROLES` counters, then `ROLES` names of at most
`ROLE_NAME_BYTES` UTF-8 bytes, NUL-padded); a name that does not fit is cut, a role past
the table's size counts under the last entry, "other".
"""

from __future__ import annotations

import time

from farm.config.faults.kinds import KINDS
from farm.ipc.banks import Segment

FUNCTION_CODES = (1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 17, 20, 21, 22, 23, 24, 43)
EXCEPTION_CODES = tuple(range(1, 12))
# 0.3 and 0.4 tell a 300 ms delay fault from a 430 ms one (0.25 then 0.5 did not).
DURATION_BOUNDS_S = (
    0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05,
    0.1, 0.25, 0.3, 0.4, 0.5,
    1.0, 2.5, 5.0,
    10.0,
)  # fmt: skip
DURATION_BOUNDS_NS = tuple(round(bound * 1e9) for bound in DURATION_BOUNDS_S)
# Why the farm closed a connection (farm.worker.limits.guard; the engine for a malformed frame).
CLOSE_REASONS = (
    "max_connections",  # refused: the device already had `max` open (policy refuse)
    "close_oldest",  # closed to make room for a newer one (policy close_oldest)
    "worker_limit",  # refused: the worker's share of open files is used up
    "idle_timeout",  # nothing received for idle_timeout_s
    "frame_timeout",  # half a frame, unfinished for frame_timeout_s
    "malformed_frame",  # a frame with a bad MBAP header
)
FIRST_BOUND_NS = DURATION_BOUNDS_NS[0]

REQUESTS = 0
EXCEPTIONS = REQUESTS + len(FUNCTION_CODES) + 1
DURATION = EXCEPTIONS + len(EXCEPTION_CODES) + 1
DURATION_SUM_NS = DURATION + len(DURATION_BOUNDS_NS) + 1
CONNECTIONS_OPEN = DURATION_SUM_NS + 1
CONNECTIONS_ACCEPTED = CONNECTIONS_OPEN + 1
BYTES_RECEIVED = CONNECTIONS_ACCEPTED + 1
BYTES_SENT = BYTES_RECEIVED + 1
MALFORMED_FRAMES = BYTES_SENT + 1
INJECTIONS = MALFORMED_FRAMES + 1
CRC_ERRORS = INJECTIONS + len(KINDS)
UNANSWERED = CRC_ERRORS + 1
TLS_HANDSHAKE_FAILURES = UNANSWERED + 1
CLOSED = TLS_HANDSHAKE_FAILURES + 1
(
    CLOSED_MAX_CONNECTIONS,
    CLOSED_OLDEST,
    CLOSED_WORKER_LIMIT,
    CLOSED_IDLE,
    CLOSED_FRAME_TIMEOUT,
    CLOSED_MALFORMED,
) = range(CLOSED, CLOSED + len(CLOSE_REASONS))
SERVER_SLOTS = CLOSED + len(CLOSE_REASONS)

WORKER_CPU_NS = 0
ROLES = 16
ROLE_NAME_BYTES = 48
ROLE_COUNTS = 1  # ROLES slots
ROLE_NAMES = ROLE_COUNTS + ROLES  # ROLES * ROLE_NAME_BYTES bytes
HEADER_SLOTS = ROLE_NAMES + ROLES * ROLE_NAME_BYTES // 8
NO_ROLE = "none"
OTHER_ROLE = "other"


def _slot_table(base: int, codes: tuple[int, ...]) -> bytes:
    """Byte b of the result: the slot that counts code b."""
    other = base + len(codes)
    table = bytearray([other] * 256)
    for offset, code in enumerate(codes):
        table[code] = base + offset
    return bytes(table)


# Indexed by a request's function code / a response's exception code; bytes indexing is
# the cheapest lookup there is on the request path.
REQUEST_SLOT = _slot_table(REQUESTS, FUNCTION_CODES)
EXCEPTION_SLOT = _slot_table(EXCEPTIONS, EXCEPTION_CODES)
INJECTION_SLOT = {kind: INJECTIONS + number for number, kind in enumerate(KINDS)}


def local_counters() -> memoryview:
    """Counters for one server that live in this process only (a Device outside a farm)."""
    return memoryview(bytearray(8 * SERVER_SLOTS)).cast("Q")


class ShardCounters:
    """One shard's counters: `create` in the master, `attach` in the shard's worker."""

    def __init__(self, segment: Segment, servers: int) -> None:
        self.segment = segment
        self.servers = servers  # counters indexes (`Shard.stats_size`), in use or free
        self.slots: memoryview = segment.buf.cast("Q")
        # A fresh segment is zeroed by the kernel; the worker's CPU carries on from here.
        self._cpu_before_ns = self.slots[WORKER_CPU_NS]

    @staticmethod
    def size(servers: int) -> int:
        return 8 * (HEADER_SLOTS + servers * SERVER_SLOTS)

    @classmethod
    def create(cls, servers: int) -> ShardCounters:
        return cls(Segment.create(cls.size(servers)), servers)

    @classmethod
    def attach(cls, name: str) -> ShardCounters:
        segment = Segment.attach(name)
        return cls(segment, (len(segment.buf) // 8 - HEADER_SLOTS) // SERVER_SLOTS)

    @property
    def name(self) -> str:
        return self.segment.name

    def grow(self, servers: int) -> None:
        """Room for `servers` counters indexes (the master, when its shard grows)."""
        self.segment.grow(self.size(servers))
        self._remap()

    def refresh(self) -> None:
        """See what the master grew (a worker, when servers are added to its shard)."""
        self.segment.refresh()
        self._remap()

    def _remap(self) -> None:
        # Views on the old mapping (a device's counters) stay valid: same pages.
        self.slots = self.segment.buf.cast("Q")
        self.servers = (len(self.slots) - HEADER_SLOTS) // SERVER_SLOTS

    def server(self, index: int) -> memoryview:
        """The slots of the server whose `ServerSpec.stats_index` is `index`."""
        start = self.offset(index)
        return self.slots[start : start + SERVER_SLOTS]

    def snapshot(self, servers: int | None = None) -> list[int]:
        """The header and the first `servers` (default: all) servers' slots, copied at once
        (slot k of stats index i is at `offset(i) + k`)."""
        if servers is None:
            return self.slots.tolist()
        return self.slots[: self.offset(servers)].tolist()

    @staticmethod
    def offset(index: int) -> int:
        return HEADER_SLOTS + index * SERVER_SLOTS

    def count_injection(self, index: int, kind: str) -> None:
        """A fault the master applies itself (offline, reboot) acted on a server."""
        self.slots[self.offset(index) + INJECTION_SLOT[kind]] += 1

    def reset_open_connections(self) -> None:
        for index in range(self.servers):
            self.slots[self.offset(index) + CONNECTIONS_OPEN] = 0

    def record_cpu(self) -> None:
        """Called by the worker: its own CPU time on top of its predecessors'."""
        self.slots[WORKER_CPU_NS] = self._cpu_before_ns + time.process_time_ns()

    def cpu_seconds(self) -> float:
        return float(self.slots[WORKER_CPU_NS]) / 1e9

    def _role_name(self, entry: int) -> memoryview:
        start = 8 * ROLE_NAMES + entry * ROLE_NAME_BYTES
        return self.segment.buf[start : start + ROLE_NAME_BYTES]

    def count_role(self, role: str | None) -> None:
        """Called by the worker: one more TLS session whose client has this role."""
        name = (role or NO_ROLE).encode()[:ROLE_NAME_BYTES] or NO_ROLE.encode()
        padded = name.ljust(ROLE_NAME_BYTES, b"\0")
        for entry in range(ROLES - 1):
            stored = self._role_name(entry)
            if stored[0] == 0:
                stored[:] = padded  # a new role: the entry is this one's from now on
            if stored == padded:
                self.slots[ROLE_COUNTS + entry] += 1
                return
        last = self._role_name(ROLES - 1)
        last[:] = OTHER_ROLE.encode().ljust(ROLE_NAME_BYTES, b"\0")
        self.slots[ROLE_COUNTS + ROLES - 1] += 1

    def roles(self) -> dict[str, int]:
        """TLS sessions so far by client role (read by the master)."""
        counts: dict[str, int] = {}
        for entry in range(ROLES):
            name = bytes(self._role_name(entry)).rstrip(b"\0")
            if name:
                label = name.decode(errors="replace")
                counts[label] = counts.get(label, 0) + self.slots[ROLE_COUNTS + entry]
        return counts

    def close(self) -> None:
        """Drop this process's mapping; the master's also removes the segment."""
        self.slots.release()
        self.segment.close()
