"""What the control API says about the system under test, as frozen dataclasses: the
writes it made (`WriteRecord`, from `FarmClient.writes`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from farm.errors import FarmError


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteRecord:
    """One write in a server's journal."""

    seq: int  # its number on that server, from 1
    time: float  # wall clock, seconds since the epoch
    monotonic: float  # the farm host's monotonic clock
    client: str  # HOST:PORT of the client, or "farm"
    source: str  # tcp, rtu-over-tcp, udp, tls or farm
    farm: bool  # made by the farm itself (API, scenario, page)
    unit: int
    function_code: int  # 0 for the farm's own writes
    table: str
    address: int
    values: tuple[int, ...]
    previous: tuple[int, ...]  # what those addresses held before
    points: dict[str, int | float | str]  # points the write covers wholly, values after it
    file: int | None = None  # FC 21 (table "file_records"): the file; `address`: its record

    @property
    def where(self) -> str:
        """'holding_registers 10', or 'file 4 record 2' for an FC 21 write."""
        if self.file is not None:
            return f"file {self.file} record {self.address}"
        return f"{self.table} {self.address}"


def write_record(row: dict[str, Any]) -> WriteRecord:
    try:
        return WriteRecord(
            **{
                **row,
                "values": tuple(row["values"]),
                "previous": tuple(row["previous"]),
                "points": dict(row.get("points", {})),
            }
        )
    except (TypeError, KeyError) as exc:
        raise FarmError(f"the farm answered a write this client cannot read ({exc})") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteMatch:
    """What `wait_for_write` waits for; every field given must hold.

    `point` (and `value`): a write that covers the point wholly (and leaves it at `value`).
    `table`/`address` (and `value` or `values`): a write to that table that covers `address`
    (and leaves `value`, or the entries `values`, from there). `client`: its HOST or
    HOST:PORT, or "farm".
    """

    point: str | None = None
    value: float | str | None = None
    table: str | None = None
    address: int | None = None
    values: tuple[int, ...] | None = None
    client: str | None = None

    def __str__(self) -> str:
        given = {name: getattr(self, name) for name in self.__slots__}
        return ", ".join(f"{name}={value!r}" for name, value in given.items() if value is not None)

    def matches(self, write: WriteRecord) -> bool:
        if self.client is not None and self.client not in (write.client, _host(write.client)):
            return False
        if self.point is not None:
            if self.point not in write.points:
                return False
            return self.value is None or _same(write.points[self.point], self.value)
        if self.table is not None and write.table != self.table:
            return False
        if self.address is None:
            return self.value is None and self.values is None
        offset = self.address - write.address
        if not 0 <= offset < len(write.values):
            return False
        if self.values is not None:
            return write.values[offset : offset + len(self.values)] == tuple(self.values)
        return self.value is None or _same(write.values[offset], self.value)


def _host(client: str) -> str:
    return client.rpartition(":")[0].strip("[]") if ":" in client else client


def _same(found: float | str, wanted: float | str) -> bool:
    if isinstance(found, str) or isinstance(wanted, str):
        return str(found) == str(wanted)
    return abs(float(found) - float(wanted)) <= 1e-9 * max(1.0, abs(float(wanted)))


def journal_text(writes: list[WriteRecord]) -> str:
    """A server's journal as `farm writes` prints it, for a failure message."""
    if not writes:
        return "  (no writes journalled)"
    lines = []
    for write in writes:
        values = ",".join(str(value) for value in write.values)
        previous = ",".join(str(value) for value in write.previous)
        points = "".join(f"  {name}={value}" for name, value in write.points.items())
        lines.append(
            f"  #{write.seq} {write.client} unit {write.unit} "
            f"{write.where} = {values} (was {previous}){points}"
        )
    return "\n".join(lines)


@dataclass(frozen=True, slots=True, kw_only=True)
class PollInfo:
    """One request a client repeats on one server, and how often."""

    server: str
    unit: int
    function_code: int
    address: int
    count: int
    requests: int
    last_s: float
    p50_s: float
    p99_s: float
    max_gap_s: float
    seen_s_ago: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientInfo:
    """One client of the farm (an address) and its polling."""

    client: str
    servers: tuple[str, ...]
    requests_per_s: float
    poll_p50_s: float
    poll_p99_s: float
    connections: int
    exceptions: int
    requests: dict[int, int]  # by function code
    writes: int
    stale: tuple[str, ...]  # polled before, not for 3 intervals
    polls: tuple[PollInfo, ...] = ()


def client_info(row: dict[str, Any]) -> ClientInfo:
    try:
        return ClientInfo(
            **{
                **row,
                "servers": tuple(row["servers"]),
                "stale": tuple(row["stale"]),
                "requests": {int(code): count for code, count in row["requests"].items()},
                "polls": tuple(PollInfo(**poll) for poll in row.get("polls", ())),
            }
        )
    except (TypeError, KeyError, ValueError) as exc:
        raise FarmError(f"the farm answered a client this client cannot read ({exc})") from exc
