"""What the control API's calls return, as frozen dataclasses (farm.client.api builds them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerInfo:
    """One server as the farm reports it."""

    name: str
    address: str  # HOST:PORT ([HOST]:PORT for IPv6)
    template: str
    worker: int
    up: bool  # its worker serves it now
    error: str | None = None  # why it failed to start, if it did
    fleet: str = "default"
    state: str = "up"  # up | offline (not serving) | faulted (a fault is active on it)
    stopped: bool = False  # stopped through the API (or an offline fault)
    transport: str = "tcp"  # tcp, rtu-over-tcp, udp or tls

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.address.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerPage:
    """One page of `FarmClient.page`: the servers, how many match in all, where to go on."""

    servers: list[ServerInfo]
    total: int
    next_offset: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PointValue:
    """A point of a server, with its engineering value when it was read."""

    name: str
    unit: int
    table: str
    address: int
    type: str
    scale: float
    byte_order: str
    word_order: str
    writable: bool  # whether Modbus clients may write it (the API may, as the operator)
    behaviour: str
    value: float | int | str
    registers: list[int]  # its raw table entries


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerDetail:
    """One server in full: `info` as in the list, and what only the detail shows."""

    info: ServerInfo
    connections: int  # client connections open now
    units: list[dict[str, int]]  # unit_id and the size of each table
    points: list[PointValue]
    faults: list[dict[str, Any]]  # active on it


@dataclass(frozen=True, slots=True, kw_only=True)
class Switched:
    """What `stop` or `start` did: `changed` is False when it was in that state already."""

    name: str
    changed: bool
    up: bool
    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PointTarget:
    """One point of a device, as a SCADA maps it (see farm.config.targets)."""

    name: str
    unit_id: int
    table: str
    address: int
    count: int
    type: str
    byte_order: str
    word_order: str
    scale: float
    writable: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceTarget:
    """One device as a SCADA imports it: where it answers, its unit ids and its points."""

    index: int  # in the whole fleet: the same whichever shard serves it
    name: str
    fleet: str
    ip: str
    port: int
    transport: str  # tcp, rtu-over-tcp, udp or tls
    template: str
    unit_ids: tuple[int, ...]
    points: tuple[PointTarget, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceList:
    """A farm's devices, and which shard of the fleet the farm serves."""

    shard_index: int
    shard_count: int
    fleet_total: int
    devices: tuple[DeviceTarget, ...]


_SERVER_FIELDS = (
    "name",
    "address",
    "template",
    "worker",
    "up",
    "error",
    "fleet",
    "state",
    "stopped",
    "transport",
)


def server_info(row: dict[str, Any]) -> ServerInfo:
    return ServerInfo(**{key: row[key] for key in _SERVER_FIELDS if key in row})
