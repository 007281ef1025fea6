"""The plan: every server of the farm, its address, its bank, and the worker that hosts it.

Second stop in the data flow (config -> plan -> supervisor -> ...). `build_plan` expands
templates into `ServerSpec`s, gives each an address, shards them over the workers
(server i goes to worker i mod W: even, and stable for a given W), and places each server in
its shard's shared memory so master and worker agree on every byte offset without talking.

Places are keyed, not positional: a server keeps its place whatever else joins or leaves
the shard. A shard's memory is a list of blocks at fixed offsets; a block has room for
`capacity` servers of one template, and each server holds one slot of a block and one
index in the shard's counters (farm.ipc.stats), given once and never moved. `add_servers`
(which `build_plan` uses too) puts a newcomer in a slot a departed server of its template
left free, else appends one block for the newcomers of a template at the end of the
segment, and their counters at the end of the counters: a shard grows by extending its two
segments (an ftruncate; mapped bytes stay where they are), never by moving bytes. A server
leaves by being dropped from `Shard.servers`; its slot and counters index are then free for
the next newcomer of its template.

Inside a block the banks are laid out table-major: per unit and per table, that table of
every slot side by side (slot s at s * table size). Pages of a table nobody touches (an idle
device's coils and holding registers, a free slot) are then never allocated, where a
server-major layout would have a live input register on nearly every page of the segment.
After the tables come every slot's diagnostics block (`DIAGNOSTICS_BYTES`, laid out by
farm.ipc.diagnostics: listen-only mode, counter baselines, the event log), then every slot's
file records (FC 20/21), in the template's file order: device state a worker restart keeps.
"""

from __future__ import annotations

import sys
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from farm.config.shards import FleetSlice, whole_fleet
from farm.config.templates import DeviceTemplate, Point, Table, UnitLayout
from farm.errors import ConfigError

Transport = Literal["tcp", "rtu-over-tcp", "udp", "tls"]
TRANSPORTS: tuple[Transport, ...] = ("tcp", "rtu-over-tcp", "udp", "tls")
# Room for one server's diagnostics block; farm.ipc.diagnostics lays it out and checks it fits.
DIAGNOSTICS_BYTES = 256

if TYPE_CHECKING:
    from farm.config.growth import FleetSpec

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
    tables_end = spec.block_offset + spec.block_capacity * tables_bytes(template)
    return tables_end + spec.slot * DIAGNOSTICS_BYTES


def file_offset(spec: ServerSpec, template: DeviceTemplate, number: int) -> int:
    """Byte offset of record 0 of a server's file `number`."""
    offset = spec.block_offset + spec.block_capacity * (tables_bytes(template) + DIAGNOSTICS_BYTES)
    offset += spec.slot * files_bytes(template)
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
                return offset + spec.slot * table_bytes(unit, each)
            offset += spec.block_capacity * table_bytes(unit, each)
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
    # Its places in the shard's memory (see the module docstring): its block (offset in the
    # bank segment, and room), its slot in that block, and the index of its counters.
    block_offset: int
    block_capacity: int
    slot: int
    stats_index: int

    def __post_init__(self) -> None:
        # A worker decodes its shard's specs from the pipe with new strings for every field
        # of every spec: interned, the fleet and template names of a 5,000-server shard are
        # one object each, not 5,000 (0.5 MB a worker). Hosts are not: at its own address
        # each would only add an entry to the interned strings.
        object.__setattr__(self, "fleet", sys.intern(self.fleet))
        object.__setattr__(self, "template", sys.intern(self.template))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    """Room for `capacity` servers of one template, at a fixed place in a shard's memory:
    `size` bytes of banks from `offset` in the bank segment, and counters from index
    `first_stats` on (slot s has counters index first_stats + s)."""

    template: str
    offset: int
    capacity: int
    size: int
    first_stats: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Shard:
    """The servers one worker hosts, and the blocks of memory they live in."""

    worker: int
    servers: tuple[ServerSpec, ...]
    blocks: tuple[Block, ...]

    @property
    def bank_bytes(self) -> int:
        """The size of the bank segment (at least 1 byte: a segment cannot be empty)."""
        return max((block.offset + block.size for block in self.blocks), default=0) or 1

    @property
    def stats_size(self) -> int:
        """Counters indexes in use or free: the length of the shard's counters."""
        return sum(block.capacity for block in self.blocks)


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    templates: dict[str, DeviceTemplate]
    shards: tuple[Shard, ...]
    # The part of the fleet this farm serves, when the fleet runs as several farms
    # (farm.config.shards); the whole fleet otherwise.
    fleet_slice: FleetSlice
    # How each fleet grows and shrinks at runtime (farm.config.growth); () when unknown.
    fleets: tuple[FleetSpec, ...] = ()
    seed: int = 0  # the farm's seed: a server's own seed comes from it and its name

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
    """`count` servers on consecutive ports of one host, from `port_base` on."""
    if count < 1:
        raise ConfigError(f"a farm needs at least 1 server, got {count}", about=("count",))
    if not 1 <= port_base <= 65535:
        raise ConfigError(
            f"the first port must be a TCP port (1-65535), got {port_base}", about=("port_base",)
        )
    if port_base + count - 1 > 65535:
        fix = (
            f"start at port {65536 - count} at most" if count < 65536 else "a host has 65535 ports"
        )
        raise ConfigError(
            f"{count} servers from port {port_base} run past port 65535 ({fix})",
            about=("count", "port_base"),
        )
    width = max(4, len(str(count - 1)))
    return default_devices(count, width, host, port_base, template, transport, tls)


def default_devices(
    count: int,
    width: int,
    host: str,
    port_base: int,
    template: str,
    transport: Transport = "tcp",
    tls: TlsSettings | None = None,
) -> list[ServerRequest]:
    """device-0000... (names `width` digits wide) on consecutive ports from `port_base`:
    the default fleet's first `count` servers, at start or grown (farm.config.growth)."""
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
    fleet_slice: FleetSlice | None = None,
) -> Plan:
    """Shard the requested servers over `workers` workers (fewer if there are fewer servers).

    With `fleet_slice`, `requests` is the whole fleet and the plan holds only that slice,
    each server keeping its index in the whole fleet.
    """
    if workers < 1:
        raise ConfigError(f"a farm needs at least 1 worker, got {workers}", about=("workers",))
    part = fleet_slice or whole_fleet(len(requests))
    # Each server keeps its index in the whole fleet; server i of the slice goes to worker
    # i mod W.
    indexed = list(enumerate(requests))[part.start : part.stop]
    workers = min(workers, len(indexed))
    empty = [Shard(worker=worker, servers=(), blocks=()) for worker in range(workers)]
    shards = tuple(
        add_servers(shard, indexed[shard.worker :: workers], templates, seed) for shard in empty
    )
    return Plan(templates=dict(templates), shards=shards, seed=seed, fleet_slice=part)


def add_servers(
    shard: Shard,
    newcomers: list[tuple[int, ServerRequest]],
    templates: dict[str, DeviceTemplate],
    seed: int,
) -> Shard:
    """`shard` with `newcomers` (farm-wide index, request) placed; no one else moves.

    A newcomer takes a free slot of a block of its template (the oldest first); the
    newcomers of a template short of free slots share one new block, appended at the end.
    """
    taken = {(spec.block_offset, spec.slot) for spec in shard.servers}
    free: dict[str, list[tuple[Block, int]]] = {}
    for block in shard.blocks:
        free.setdefault(block.template, []).extend(
            (block, slot) for slot in range(block.capacity) if (block.offset, slot) not in taken
        )
    blocks = list(shard.blocks)
    needed = Counter(request.template for _, request in newcomers)  # in order of appearance
    for template, count in needed.items():
        short = count - len(free.get(template, ()))
        if short > 0:
            block = Block(
                template=template,
                offset=max((b.offset + b.size for b in blocks), default=0),
                capacity=short,
                size=short * device_bytes(templates[template]),
                first_stats=sum(b.capacity for b in blocks),
            )
            blocks.append(block)
            free.setdefault(template, []).extend((block, slot) for slot in range(short))
    places = {template: iter(each) for template, each in free.items()}
    servers = list(shard.servers)
    for index, request in newcomers:
        block, slot = next(places[request.template])
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
                block_offset=block.offset,
                block_capacity=block.capacity,
                slot=slot,
                stats_index=block.first_stats + slot,
            )
        )
    return Shard(worker=shard.worker, servers=tuple(servers), blocks=tuple(blocks))
