"""The plan: every server of the farm, its address, its bank, and the worker that hosts it.

Second stop in the data flow (config -> plan -> supervisor -> ...). `build_plan` expands
templates into `ServerSpec`s, gives each an address, shards them over the workers
(server i goes to worker i mod W: even, and stable for a given W), and lays out each shard's
shared-memory segment so master and worker agree on every byte offset without talking.

A segment is laid out table-major: one block per template (in order of first appearance in
the shard), and inside it, per unit and per table, that table of every server of the block
side by side (server of rank r at r * table size). Pages of a table nobody touches (an idle
device's coils and holding registers) are then never allocated, where a server-major layout
would have a live input register on nearly every page of the segment. After the tables come
every server's diagnostics block (`DIAGNOSTICS_BYTES`, laid out by farm.ipc.diagnostics:
listen-only mode, counter baselines, the event log), then every server's file records
(FC 20/21), in the template's file order: device state that a worker restart keeps.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Literal

from farm.config.templates import DeviceTemplate, Point, Table, UnitLayout
from farm.errors import ConfigError

Transport = Literal["tcp", "rtu-over-tcp", "udp", "tls"]
TRANSPORTS: tuple[Transport, ...] = ("tcp", "rtu-over-tcp", "udp", "tls")
# Room for one server's diagnostics block; farm.ipc.diagnostics lays it out and checks it fits.
DIAGNOSTICS_BYTES = 256

# Bits take a byte each (fast to address, and only 1/8 of the register tables' cost
# matters at 25 KiB per server); registers are stored big-endian, as they go on the wire.
TABLE_ORDER = (Table.COILS, Table.DISCRETE_INPUTS, Table.HOLDING_REGISTERS, Table.INPUT_REGISTERS)


def table_bytes(unit: UnitLayout, table: Table) -> int:
    return unit.size(table) * (1 if table.is_bits else 2)


def unit_bytes(unit: UnitLayout) -> int:
    return sum(table_bytes(unit, table) for table in TABLE_ORDER)


def tables_bytes(template: DeviceTemplate) -> int:
    return sum(unit_bytes(unit) for unit in template.units)


def files_bytes(template: DeviceTemplate) -> int:
    return sum(2 * file.records for file in template.files)


def device_bytes(template: DeviceTemplate) -> int:
    return tables_bytes(template) + DIAGNOSTICS_BYTES + files_bytes(template)


def diagnostics_offset(spec: ServerSpec, template: DeviceTemplate) -> int:
    """Byte offset of a server's diagnostics block in its shard's segment."""
    tables_end = spec.block_offset + spec.block_servers * tables_bytes(template)
    return tables_end + spec.rank * DIAGNOSTICS_BYTES


def file_offset(spec: ServerSpec, template: DeviceTemplate, number: int) -> int:
    """Byte offset of record 0 of a server's file `number`."""
    offset = spec.block_offset + spec.block_servers * (tables_bytes(template) + DIAGNOSTICS_BYTES)
    offset += spec.rank * files_bytes(template)
    for file in template.files:
        if file.number == number:
            return offset
        offset += 2 * file.records
    raise ValueError(f"{template.name} has no file {number}")


def table_offset(spec: ServerSpec, template: DeviceTemplate, unit_id: int, table: Table) -> int:
    """Byte offset of one table of a server's unit in its shard's segment."""
    offset = spec.block_offset
    for unit in template.units:
        for each in TABLE_ORDER:
            if unit.unit_id == unit_id and each is table:
                return offset + spec.rank * table_bytes(unit, each)
            offset += spec.block_servers * table_bytes(unit, each)
    raise ValueError(f"{template.name} has no unit {unit_id}")


def point_offset(spec: ServerSpec, template: DeviceTemplate, point: Point) -> int:
    """Byte offset of a point's first byte in its server's shard segment."""
    if not any(unit.unit_id == point.unit_id for unit in template.units):
        raise ValueError(
            f"point {point.name} names unit {point.unit_id}, which {template.name} lacks"
        )
    start = table_offset(spec, template, point.unit_id, point.table)
    return start + point.address * (1 if point.table.is_bits else 2)


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSettings:
    """Modbus/TCP Security for a fleet: absolute paths of the server's certificate and key,
    and of the CA its clients' certificates must chain to (None: no client certificate)."""

    certificate: str
    key: str
    client_ca: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSpec:
    """One simulated device: where it listens, how it frames Modbus, where its registers live."""

    index: int
    name: str
    fleet: str
    host: str
    port: int
    template: str
    seed: int
    transport: Transport = "tcp"
    tls: TlsSettings | None = None  # shared by every server of a fleet
    # Where its banks are (see the module docstring): the offset of its template's block
    # in the shard's segment, the servers in that block, and this server's rank among them.
    block_offset: int
    block_servers: int
    rank: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Shard:
    """The servers one worker hosts, and the size of the segment holding their banks."""

    worker: int
    servers: tuple[ServerSpec, ...]
    bank_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    templates: dict[str, DeviceTemplate]
    shards: tuple[Shard, ...]

    @property
    def servers_total(self) -> int:
        return sum(len(shard.servers) for shard in self.shards)

    def servers(self) -> list[ServerSpec]:
        everyone = [spec for shard in self.shards for spec in shard.servers]
        return sorted(everyone, key=lambda spec: spec.index)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerRequest:
    """A server before sharding: what the config asked for."""

    name: str
    fleet: str
    host: str
    port: int
    template: str
    transport: Transport = "tcp"
    tls: TlsSettings | None = None


def default_servers(
    count: int,
    host: str,
    port_base: int,
    template: str,
    transport: Transport = "tcp",
    tls: TlsSettings | None = None,
) -> list[ServerRequest]:
    """`--count N` servers on consecutive ports of one host."""
    if count < 1:
        raise ConfigError(f"--count must be at least 1, got {count}")
    if not 1 <= port_base <= 65535:
        raise ConfigError(f"--port-base must be a TCP port (1-65535), got {port_base}")
    if port_base + count - 1 > 65535:
        raise ConfigError(
            f"--count {count} from --port-base {port_base} runs past port 65535; "
            f"lower --port-base to at most {65536 - count} or lower --count"
        )
    width = max(4, len(str(count - 1)))
    return [
        ServerRequest(
            name=f"device-{i:0{width}d}",
            fleet="default",
            host=host,
            port=port_base + i,
            template=template,
            transport=transport,
            tls=tls,
        )
        for i in range(count)
    ]


def build_plan(
    requests: list[ServerRequest],
    templates: dict[str, DeviceTemplate],
    workers: int,
    seed: int = 0,
) -> Plan:
    """Shard the requested servers over `workers` workers (fewer if there are fewer servers)."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    workers = min(workers, len(requests))
    shards = tuple(
        _shard(slot, requests[slot::workers], range(slot, len(requests), workers), templates, seed)
        for slot in range(workers)
    )
    return Plan(templates=dict(templates), shards=shards)


def _shard(
    slot: int,
    requests: list[ServerRequest],
    indices: range,
    templates: dict[str, DeviceTemplate],
    seed: int,
) -> Shard:
    """One worker's servers, their banks laid out table-major per template block."""
    blocks: dict[str, int] = {}  # template -> servers of it in this shard
    for request in requests:
        blocks[request.template] = blocks.get(request.template, 0) + 1
    block_offsets: dict[str, int] = {}
    size = 0
    for name, count in blocks.items():
        block_offsets[name] = size
        size += count * device_bytes(templates[name])
    ranks = dict.fromkeys(blocks, 0)
    servers = []
    for index, request in zip(indices, requests, strict=True):
        servers.append(
            ServerSpec(
                index=index,
                name=request.name,
                fleet=request.fleet,
                host=request.host,
                port=request.port,
                template=request.template,
                seed=zlib.crc32(f"{seed}:{request.name}".encode()),
                transport=request.transport,
                tls=request.tls,
                block_offset=block_offsets[request.template],
                block_servers=blocks[request.template],
                rank=ranks[request.template],
            )
        )
        ranks[request.template] += 1
    return Shard(worker=slot, servers=tuple(servers), bank_bytes=max(size, 1))
