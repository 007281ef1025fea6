"""The write journal: every write a client (or the farm) made to a server, in shared memory
the master owns, so a worker's kill -9 loses no recorded write.

Sits beside the banks and the counters (... worker -> engine -> banks, journal). The master
creates one segment per shard next to its counters segment (`Assign.journal_segment`) and
reads it only when asked (farm.master.http.observe.journal); the worker writes it from the engine.

Layout: `server_bytes(writes)` per server at its `ServerSpec.stats_index`, like the counters. A
segment is a sparse file: a server nobody writes to costs no memory, and one written a few
times costs a page or two. Per server:

    header      NEXT_SEQ (uint64: the next write's sequence number, from 1), then the
                cursors (uint64, records written so far) of the two rings
    ring 0      2 x `writes` records of RECORD_BYTES (`farm up --journal-size`, default
                DEFAULT_WRITES = 256): writes by clients (the worker's); a reader shows the
                newest `writes` of them (fewer when writes are longer than 9 registers)
    ring 1      FARM_RECORDS records: writes by the farm itself (API, scenario, page; the
                master's)

Each ring has one writer, so a record is never torn by a second one; the sequence counter is
shared, and a client write and a farm write to the same server in the same microsecond may
get the same number (readers order by sequence, then by monotonic time).

A write takes one record and as many continuation records as its values need, at
consecutive places (modulo the ring). Every record starts with its write's sequence number
(0 while it is written) and its part number; a reader keeps a write only when all its parts
carry its number, so a write overwritten by newer ones, or cut by a kill -9, is skipped. First
record: seq u64, part u8, parts u8, source u8 (SOURCES), unit u8, function code u8, table u8
(TABLES), address u16, count u16, port u16, client IPv6 (IPv4-mapped) 16 bytes, wall-clock
ns u64, monotonic ns u64, then data; a continuation: seq u64, part u8, parts u8, data. The
data: the values written then the values before, registers as on the wire (two bytes each,
big-endian), coils one byte each (0 or 1); an FC 21 write's (table FILE_RECORDS, address =
first record) starts with its file number (u16, big-endian).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from farm.config.templates import Table
from farm.ipc.banks import Segment

RECORD_BYTES = 64
DEFAULT_WRITES = 256  # client writes kept per server unless `farm up --journal-size` says
MAX_WRITES = 65536  # 8 MiB of (sparse) shared memory per written server
RECORDS_PER_WRITE = 2  # a write of up to 9 registers takes two records (of up to 3: one)
CLIENT_RECORDS = DEFAULT_WRITES * RECORDS_PER_WRITE
FARM_RECORDS = 128
HEADER_BYTES = 32
SOURCES = ("farm", "tcp", "rtu-over-tcp", "udp", "tls")
FARM = 0
FILE_RECORDS = "file_records"  # an FC 21 write's "table": its file number leads the data
TABLES: tuple[str, ...] = (
    Table.COILS,
    Table.DISCRETE_INPUTS,
    Table.HOLDING_REGISTERS,
    Table.INPUT_REGISTERS,
    FILE_RECORDS,
)
_BITS = (Table.COILS, Table.DISCRETE_INPUTS)
_TABLE_CODE = {table: code for code, table in enumerate(TABLES)}
_U16 = struct.Struct(">H")
_FIRST = struct.Struct("<QBBBBBBHHH16sQQ")
_PART = struct.Struct("<QBB")
FIRST_DATA = RECORD_BYTES - _FIRST.size
PART_DATA = RECORD_BYTES - _PART.size
_U64 = struct.Struct("<Q")
_NEXT_SEQ = 0
_CURSORS = (8, 16)  # ring 0's, ring 1's


def server_bytes(writes: int = DEFAULT_WRITES) -> int:
    """A server's share of a journal segment when it keeps `writes` client writes."""
    return HEADER_BYTES + (writes * RECORDS_PER_WRITE + FARM_RECORDS) * RECORD_BYTES


SERVER_BYTES = server_bytes()


@dataclass(frozen=True, slots=True)
class Write:
    """One journalled write."""

    seq: int
    time: float  # wall clock, seconds since the epoch
    monotonic: float  # CLOCK_MONOTONIC, seconds (one clock per host)
    client: str  # "host:port", or "farm" for the farm's own writes
    source: str  # one of SOURCES
    unit: int
    function_code: int  # 0 for the farm's own writes
    table: str  # a Table, or FILE_RECORDS (then `address` is the record number in `file`)
    address: int
    values: tuple[int, ...]
    previous: tuple[int, ...]
    file: int | None = None  # the file number of an FC 21 write


@dataclass(frozen=True, slots=True)
class Peer:
    """Who wrote: a client's address packed once per connection, or the farm."""

    packed: bytes  # 16 bytes, IPv6 or IPv4-mapped
    port: int
    source: int  # index into SOURCES

    @classmethod
    def of(cls, host: str, port: int, source: str) -> Peer:
        try:
            address = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            address = ipaddress.IPv6Address(0)
        if isinstance(address, ipaddress.IPv4Address):
            address = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + address.packed)
        return cls(address.packed, port, SOURCES.index(source))


FARM_PEER = Peer(b"\0" * 16, 0, FARM)


def _host(packed: bytes) -> str:
    address = ipaddress.IPv6Address(packed)
    mapped = address.ipv4_mapped
    return str(mapped) if mapped is not None else f"[{address}]"


class ServerJournal:
    """One server's journal: its writer (`record`) and its reader (`writes`)."""

    __slots__ = ("keep", "view")

    def __init__(self, view: memoryview, writes: int = DEFAULT_WRITES) -> None:
        self.view = view  # server_bytes(writes) of a journal segment
        self.keep = writes  # client writes a reader shows, the newest

    def record(
        self,
        peer: Peer,
        unit: int,
        function_code: int,
        table: str,
        address: int,
        values: bytes,
        previous: bytes,
        wall_ns: int,
        mono_ns: int,
        file: int = 0,
    ) -> int:
        """Journal one write (values in bank layout); its sequence number. Ring 0 for clients,
        ring 1 for the farm: call it from the one process that owns that ring. A write to
        FILE_RECORDS is to records `address`.. of `file` (registers)."""
        view = self.view
        seq = int(_U64.unpack_from(view, _NEXT_SEQ)[0]) + 1
        _U64.pack_into(view, _NEXT_SEQ, seq)
        ring = 1 if peer.source == FARM else 0
        base, size = _ring(ring, self.keep)
        cursor = _U64.unpack_from(view, _CURSORS[ring])[0]
        data = values + previous
        if table == FILE_RECORDS:
            data = _U16.pack(file) + data
        parts = 1 + max(0, -(-(len(data) - FIRST_DATA) // PART_DATA))
        parts = min(parts, size)
        count = len(values) // (1 if table in _BITS else 2)
        for part in range(parts):
            at = base + ((cursor + part) % size) * RECORD_BYTES
            _U64.pack_into(view, at, 0)  # a reader skips this record until it is whole
            if part == 0:
                chunk = data[:FIRST_DATA]
                fields = (0, 0, parts, peer.source, unit, function_code, _TABLE_CODE[table])
                _FIRST.pack_into(
                    view, at, *fields, address, count, peer.port, peer.packed, wall_ns, mono_ns
                )
                view[at + _FIRST.size : at + _FIRST.size + len(chunk)] = chunk
            else:
                start = FIRST_DATA + (part - 1) * PART_DATA
                chunk = data[start : start + PART_DATA]
                _PART.pack_into(view, at, 0, part, parts)
                view[at + _PART.size : at + _PART.size + len(chunk)] = chunk
            _U64.pack_into(view, at, seq)
        _U64.pack_into(view, _CURSORS[ring], cursor + parts)
        return seq

    def next_seq(self) -> int:
        """The number the next write will get."""
        return int(_U64.unpack_from(self.view, _NEXT_SEQ)[0]) + 1

    def writes(self) -> list[Write]:
        """Every write still in the journal, oldest first (a copy taken at once)."""
        snapshot = bytes(self.view)
        clients = _ring_writes(snapshot, 0, self.keep)
        clients.sort(key=lambda write: (write.seq, write.monotonic))
        found = [*clients[-self.keep :], *_ring_writes(snapshot, 1, self.keep)]
        found.sort(key=lambda write: (write.seq, write.monotonic))
        return found


def _ring(ring: int, writes: int) -> tuple[int, int]:
    """Where a ring starts in a server's bytes, and how many records it holds."""
    client_records = writes * RECORDS_PER_WRITE
    if ring == 0:
        return HEADER_BYTES, client_records
    return HEADER_BYTES + client_records * RECORD_BYTES, FARM_RECORDS


def _ring_writes(snapshot: bytes, ring: int, writes: int) -> list[Write]:
    base, size = _ring(ring, writes)
    found = []
    for place in range(size):
        at = base + place * RECORD_BYTES
        seq, part, parts = _PART.unpack_from(snapshot, at)
        if seq == 0 or part != 0:
            continue
        data = bytearray(snapshot[at + _FIRST.size : at + RECORD_BYTES])
        for following in range(1, parts):
            other = base + ((place + following) % size) * RECORD_BYTES
            if _PART.unpack_from(snapshot, other) != (seq, following, parts):
                break
            data += snapshot[other + _PART.size : other + RECORD_BYTES]
        else:
            found.append(_decode(snapshot[at : at + _FIRST.size], bytes(data)))
    return found


def _decode(first: bytes, data: bytes) -> Write:
    fields = _FIRST.unpack(first)
    seq, _, _, source, unit, fc, table_code, address, count, port, packed, wall, mono = fields
    table = TABLES[table_code]
    file = None
    if table == FILE_RECORDS:
        file, data = _U16.unpack_from(data)[0], data[2:]
    width = 1 if table in _BITS else 2
    raw_values, raw_previous = data[: width * count], data[width * count : 2 * width * count]
    if width == 2:
        values = struct.unpack(f">{count}H", raw_values)
        previous = struct.unpack(f">{count}H", raw_previous)
    else:
        values, previous = tuple(raw_values), tuple(raw_previous)
    client = "farm" if source == FARM else f"{_host(packed)}:{port}"
    return Write(
        seq=seq,
        time=wall / 1e9,
        monotonic=mono / 1e9,
        client=client,
        source=SOURCES[source],
        unit=unit,
        function_code=fc,
        table=table,
        address=address,
        values=tuple(values),
        previous=tuple(previous),
        file=file,
    )


class ShardJournal:
    """One shard's journals: `create` in the master, `attach` in the shard's worker (with the
    same `writes`: the Assign carries it)."""

    def __init__(self, segment: Segment, writes: int = DEFAULT_WRITES) -> None:
        self.segment = segment
        self.writes = writes
        self.stride = server_bytes(writes)

    def size(self, servers: int) -> int:
        return max(1, servers) * self.stride

    @classmethod
    def create(cls, servers: int, writes: int = DEFAULT_WRITES) -> ShardJournal:
        return cls(Segment.create(max(1, servers) * server_bytes(writes)), writes)

    @classmethod
    def attach(cls, name: str, writes: int = DEFAULT_WRITES) -> ShardJournal:
        return cls(Segment.attach(name), writes)

    @property
    def name(self) -> str:
        return self.segment.name

    def grow(self, servers: int) -> None:
        """Room for `servers` stats indexes (the master, when its shard grows)."""
        self.segment.grow(self.size(servers))

    def refresh(self) -> None:
        self.segment.refresh()

    def server(self, index: int) -> ServerJournal:
        """The journal of the server whose `ServerSpec.stats_index` is `index`."""
        start = index * self.stride
        return ServerJournal(self.segment.buf[start : start + self.stride], self.writes)

    def clear(self, index: int) -> None:
        """Forget a server's writes (its stats index is handed to a new server)."""
        start = index * self.stride
        buf = self.segment.buf
        if _U64.unpack_from(buf, start + _NEXT_SEQ)[0]:  # else never written: no page to touch
            buf[start : start + self.stride] = bytes(self.stride)

    def close(self) -> None:
        self.segment.close()
