"""State files: every bank of the farm saved to a file and restored at the next start.

Sits beside the supervisor in the master (plan -> supervisor -> banks <-> state file). This
module owns the file: its format, reading and checking it, restoring it into the banks
before any worker starts, and writing it atomically. farm.master.state.saver finds what to
save, while the farm runs.

What is saved is only what differs from the templates' starting values (what the master
writes at start): what clients wrote, and the state of counters and random walks. Points
whose value is a function of time alone (ramp, sine, square, replay, jitter) are left out:
the ticker recomputes them anyway.

A farm scaled while it ran (`farm scale`) is saved at its size: the header keeps each
fleet's count, and a start with the same config and state file builds its plan at those
counts (`sized_plan`, before anything is bound) and restores every server, the added ones
too. Servers are matched by name, never by index or place: a scaled farm's order (its
servers' indexes, workers and slots) is not a fresh plan's, but the names are the same.

File layout (big-endian):
    MAGIC                       18 bytes
    header length               u32
    header                      JSON: version; fleet (the digest of the fleet's shape:
                                every server's name and unit layout, by name); origin (the
                                digest of the plan the farm's config built, before a state
                                file resized it); fleets (each fleet's count when saved);
                                servers, records, saved_at
    body                        zlib of records: server u32 (its rank by name: see
                                `ranked`), unit index u8, table
                                index u8 (farm.config.plan.TABLE_ORDER; `FILES`: the server's
                                file records, FC 20/21, unit 0), byte offset in that table u32,
                                length u32, then the bytes as they are in the bank
    checksum                    SHA-256 of everything before it (32 bytes)
A file is read and checked whole (checksum, fleet, every record's bounds) before a single
byte is applied: a truncated, altered or foreign file is refused, never half-applied. Files
of format version 1 (records by server index, which a scale reorders) are refused too.
Saves are atomic: a temporary file beside the target (a random name, O_EXCL, O_NOFOLLOW),
fsync, rename, fsync of the directory. Reads are bounded (farm.files): the file by what the
plan's banks can hold, its records by the same, however well they compress.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from farm.config.plan import (
    TABLE_ORDER,
    Plan,
    ServerSpec,
    file_offset,
    files_bytes,
    table_bytes,
    table_offset,
    tables_bytes,
)
from farm.config.templates import DeviceTemplate
from farm.errors import InputError, MissingFile, StateFileError
from farm.files import read_bytes

MAGIC = b"MODBUS-FARM-STATE\n"
VERSION = 2
_LENGTH = struct.Struct(">I")
_RECORD = struct.Struct(">IBBII")
_DIGEST_BYTES = 32
MAX_HEADER_BYTES = 1024 * 1024  # a header names each fleet's count: a few KiB
STATE_FILE_BYTES = 1024**3  # a state file, compressed: 10,000 busy servers take a few MiB
FILES = len(TABLE_ORDER)  # the "table" that holds a server's file records


def ranked(plan: Plan) -> list[ServerSpec]:
    """The plan's servers in the file's order: by name (then fleet), whatever their indexes,
    workers or slots, so a scaled farm and a fresh plan of the same servers agree."""
    return sorted(
        (spec for shard in plan.shards for spec in shard.servers),
        key=lambda spec: (spec.name, spec.fleet),
    )


def fleet_digest(plan: Plan) -> str:
    """The fleet's shape: every server's name, unit layout and file sizes, by name."""
    shapes = {}  # each template's part, once: a fleet of 10,000 has a handful
    for name, template in plan.templates.items():
        units = [[u.unit_id, *(u.size(t) for t in TABLE_ORDER)] for u in template.units]
        files = [[file.number, file.records] for file in template.files]
        shapes[name] = json.dumps([units, files], separators=(",", ":"))
    digest = hashlib.sha256(f"{VERSION}\n".encode())
    for spec in ranked(plan):
        digest.update(f"{json.dumps(spec.name)}{shapes[spec.template]}\n".encode())
    return digest.hexdigest()


def area_bytes(template: DeviceTemplate, unit: int, table: int) -> int:
    """The size of one record area of a server: a unit's table, or (FILES) its file records;
    0 if the template has no such area."""
    if table == FILES:
        return files_bytes(template) if unit == 0 else 0
    if unit >= len(template.units) or table > FILES:
        return 0
    return table_bytes(template.units[unit], TABLE_ORDER[table])


def area_offset(spec: ServerSpec, template: DeviceTemplate, unit: int, table: int) -> int:
    """Where that area starts in the server's shard segment."""
    if table == FILES:
        return file_offset(spec, template, template.files[0].number)
    return table_offset(spec, template, template.units[unit].unit_id, TABLE_ORDER[table])


def fleet_counts(plan: Plan) -> dict[str, int]:
    """Each fleet's servers in the plan ({} for a plan without fleets: a shard of a fleet)."""
    counted = Counter(spec.fleet for shard in plan.shards for spec in shard.servers)
    return {fleet.name: counted[fleet.name] for fleet in plan.fleets}


@dataclass(frozen=True, slots=True)
class Record:
    server: int  # the server's rank by name in the fleet (`ranked`)
    unit: int  # index in the template's units
    table: int  # index in TABLE_ORDER, or FILES
    offset: int  # bytes into that table (or into the server's file records)
    data: bytes


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state file, read and checked whole."""

    path: Path
    fleet: str
    servers: int
    saved_at: str
    records: tuple[Record, ...]
    file_bytes: int = 0  # the file's size, as a save reports it


# -- reading -----------------------------------------------------------------------------


def load(path: Path, plan: Plan) -> Snapshot | None:
    """The state file for this plan's fleet, checked whole; None if there is none yet.

    Raises StateFileError (one line) for a file that is unreadable, corrupt, or written for
    another fleet.
    """
    found = read(path, banks_bytes(plan))
    check_writable(path)
    if found is None:
        return None
    header, body = found
    refuse = f"state file {path}"
    expected = fleet_digest(plan)
    if header.get("fleet") != expected:
        raise StateFileError(
            f"{refuse} was written for another fleet ({header.get('servers')} servers, fleet "
            f"{str(header.get('fleet'))[:12]}) than this farm's ({plan.servers_total} servers, "
            f"fleet {expected[:12]}); refusing it, nothing restored"
        )
    records = tuple(_records(body, refuse))
    _check_bounds(records, plan, refuse)
    return Snapshot(
        path=path,
        fleet=expected,
        servers=plan.servers_total,
        saved_at=str(header.get("saved_at", "")),
        records=records,
        file_bytes=path.stat().st_size,
    )


def banks_bytes(plan: Plan) -> int:
    """Every byte a state file of this plan can hold: its servers' tables and files."""
    sizes = {name: tables_bytes(t) + files_bytes(t) for name, t in plan.templates.items()}
    return sum(sizes[spec.template] for shard in plan.shards for spec in shard.servers)


def read(path: Path, banks: int | None = None) -> tuple[dict[str, object], bytes] | None:
    """The header and the records of a whole, unaltered state file; None if there is none.

    Read by farm.files' rules: a regular file of at most STATE_FILE_BYTES (and what
    `banks` bytes of records can take, compressed), its records inflated to at most what the
    header's count of them over `banks` bytes take: a small file that would inflate to
    gigabytes is refused, not inflated. Without `banks` (a plan to size them), the records
    are left out (b"") and only the header is given, from a file checked whole.
    """
    limit = STATE_FILE_BYTES
    if banks is not None:
        limit = min(limit, len(MAGIC) + _LENGTH.size + MAX_HEADER_BYTES + _compressed_bound(banks))
    try:
        raw = read_bytes(path, limit + _DIGEST_BYTES, "state file")
    except MissingFile:
        return None
    except InputError as exc:
        raise StateFileError(f"state file {exc}; refusing it, nothing restored") from exc
    refuse = f"state file {path}"
    if not raw.startswith(MAGIC):
        raise StateFileError(f"{refuse} is not a modbus-farm state file; refusing it")
    if len(raw) < len(MAGIC) + _LENGTH.size + _DIGEST_BYTES or (
        hashlib.sha256(raw[:-_DIGEST_BYTES]).digest() != raw[-_DIGEST_BYTES:]
    ):
        raise StateFileError(
            f"{refuse} is corrupt (its checksum does not match: truncated or altered since it "
            "was saved); refusing it, nothing restored"
        )
    return _split(raw, refuse, banks)


def _compressed_bound(banks: int) -> int:
    """The most a zlib stream of `banks` bytes of records (each with its 14-byte heading,
    one per byte at worst) can take: zlib's worst case is 0.1 % and a few bytes more."""
    body = banks * (1 + _RECORD.size)
    return body + body // 1000 + 1024


def check_writable(path: Path) -> None:
    """A save needs to create a file in the state file's directory and replace the file:
    checked at start, not found at the first save (a read-only filesystem included)."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise StateFileError(f"state file {path}: cannot write in {folder}")
    if path.exists() and not os.access(path, os.W_OK):
        raise StateFileError(f"state file {path}: cannot write it (read-only)")


def _split(raw: bytes, refuse: str, banks: int | None) -> tuple[dict[str, object], bytes]:
    start = len(MAGIC) + _LENGTH.size
    (length,) = _LENGTH.unpack_from(raw, len(MAGIC))
    try:
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"a header of {length} bytes")
        header = json.loads(raw[start : start + length])
    except ValueError as exc:
        raise StateFileError(f"{refuse} cannot be read ({exc}); refusing it") from exc
    if not isinstance(header, dict) or header.get("version") != VERSION:
        version = header.get("version") if isinstance(header, dict) else None
        raise StateFileError(
            f"{refuse} has format version {version}, not {VERSION} (an older modbus-farm's); "
            "refusing it: move it aside to start from the templates' values"
        )
    records = header.get("records")
    if banks is None:
        return header, b""
    if type(records) is not int or not 0 <= records <= banks:
        raise StateFileError(f"{refuse} claims {records!r} records; refusing it")
    return header, _inflate(
        raw[start + length : -_DIGEST_BYTES], banks + records * _RECORD.size, refuse
    )


def _inflate(data: bytes, bound: int, refuse: str) -> bytes:
    """zlib-decompressed `data`, refused past `bound` bytes (never more than bound+1 made)."""
    inflater = zlib.decompressobj()
    try:
        body = inflater.decompress(data, bound + 1)
    except zlib.error as exc:
        raise StateFileError(f"{refuse} cannot be read ({exc}); refusing it") from exc
    if len(body) > bound or inflater.unconsumed_tail:
        raise StateFileError(
            f"{refuse} inflates to more than its {bound:,} bytes of records; refusing it"
        )
    if not inflater.eof:
        raise StateFileError(f"{refuse} ends inside its records; refusing it")
    return body


def _records(body: bytes, refuse: str) -> Iterator[Record]:
    position = 0
    while position < len(body):
        if position + _RECORD.size > len(body):
            raise StateFileError(f"{refuse} ends inside a record; refusing it")
        server, unit, table, offset, length = _RECORD.unpack_from(body, position)
        position += _RECORD.size
        data = body[position : position + length]
        if len(data) != length:
            raise StateFileError(f"{refuse} ends inside a record; refusing it")
        position += length
        yield Record(server, unit, table, offset, data)


def _check_bounds(records: tuple[Record, ...], plan: Plan, refuse: str) -> None:
    specs = ranked(plan)
    for record in records:
        spec = specs[record.server] if record.server < len(specs) else None
        size = area_bytes(plan.templates[spec.template], record.unit, record.table) if spec else 0
        if not record.data or record.offset + len(record.data) > size:
            raise StateFileError(
                f"{refuse} holds a value outside this fleet's banks (server {record.server}); "
                "refusing it, nothing restored"
            )


# -- writing -----------------------------------------------------------------------------


def encode(
    records: list[Record], *, fleet: str, origin: str, fleets: dict[str, int], servers: int
) -> bytes:
    """A whole state file: magic, header, compressed records, checksum. `fleet`: the digest
    of the farm as it runs (`fleet_digest`), `fleets` its counts (`fleet_counts`); `origin`:
    the digest of the plan its config built."""
    body = zlib.compress(
        b"".join(
            _RECORD.pack(r.server, r.unit, r.table, r.offset, len(r.data)) + r.data for r in records
        ),
        level=1,
    )
    header = json.dumps(
        {
            "version": VERSION,
            "fleet": fleet,
            "origin": origin,
            "fleets": fleets,
            "servers": servers,
            "records": len(records),
            "saved_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
    ).encode()
    content = MAGIC + _LENGTH.pack(len(header)) + header + body
    return content + hashlib.sha256(content).digest()


def write_atomically(path: Path, content: bytes) -> None:
    """`content` as `path`, whole or not at all: a temporary file of an unpredictable name
    beside it, created new (`O_EXCL`: never a file or link someone placed there) and not
    through a link (`O_NOFOLLOW`), fsync, rename, fsync of the directory."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with os.fdopen(os.open(temporary, flags, 0o644), "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    folder = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
