"""What a simulated device is: units, table sizes, typed points, behaviours and identity.

First stop in the data flow (config -> plan -> ...): a `DeviceTemplate` is what a config
file (farm.config.schema) or the built-in default describes; the plan stamps out servers from it.
Everything here is frozen and picklable, because templates travel to workers in `Assign`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from farm import __version__


class Table(StrEnum):
    """The four Modbus data tables."""

    COILS = "coils"
    DISCRETE_INPUTS = "discrete_inputs"
    HOLDING_REGISTERS = "holding_registers"
    INPUT_REGISTERS = "input_registers"

    @property
    def is_bits(self) -> bool:
        return self in (Table.COILS, Table.DISCRETE_INPUTS)


class PointType(StrEnum):
    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"

    @property
    def registers(self) -> int:
        """Registers taken by one value (a string's length is the point's own)."""
        return _REGISTERS[self]


_REGISTERS = {
    PointType.BOOL: 1,
    PointType.INT16: 1,
    PointType.UINT16: 1,
    PointType.INT32: 2,
    PointType.UINT32: 2,
    PointType.INT64: 4,
    PointType.UINT64: 4,
    PointType.FLOAT32: 2,
    PointType.FLOAT64: 4,
    PointType.STRING: 0,
}

TABLES_SHORT = (
    (Table.COILS, "co"),
    (Table.DISCRETE_INPUTS, "di"),
    (Table.HOLDING_REGISTERS, "hr"),
    (Table.INPUT_REGISTERS, "ir"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitLayout:
    """One unit id of a device and the size of each of its tables."""

    unit_id: int
    coils: int = 1000
    discrete_inputs: int = 1000
    holding_registers: int = 1000
    input_registers: int = 1000

    def size(self, table: Table) -> int:
        return int(getattr(self, table.value))


class BehaviourKind(StrEnum):
    """How a point moves (the words a config file's `kind` takes)."""

    CONSTANT = "constant"
    COUNTER = "counter"
    RAMP = "ramp"
    SINE = "sine"
    SQUARE = "square"
    RANDOM_WALK = "random_walk"
    REPLAY = "replay"


@dataclass(frozen=True, slots=True, kw_only=True)
class Behaviour:
    """How a point's value moves over time (formulas in farm.worker.ticker).

    `value` is the constant, and the start of counters and random walks; `jitter` adds
    uniform noise of that amplitude at every update; `interval_s` is the update interval.
    """

    kind: BehaviourKind = BehaviourKind.CONSTANT
    value: float = 0.0
    text: str = ""  # a string point's constant
    low: float = 0.0
    high: float = 1000.0
    step: float = 1.0
    period_s: float = 60.0
    interval_s: float = 1.0
    jitter: float = 0.0
    samples: tuple[float, ...] = ()  # replay: the CSV column's values, one per interval

    @property
    def live(self) -> bool:
        """Whether the ticker updates it (a plain constant is written once, at start)."""
        return self.kind is not BehaviourKind.CONSTANT or self.jitter > 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Point:
    """A named value at an address: its type, encoding, scale, access and behaviour.

    The register value is the engineering value divided by `scale` (so scale 0.1 stores
    230.5 V as 2305). `byte_order` orders the two bytes of each register, `word_order` the
    registers of a multi-register value; "big"/"big" is the Modbus convention.
    """

    name: str
    unit_id: int
    table: Table
    address: int
    type: PointType = PointType.UINT16
    length: int = 0  # registers, for strings
    byte_order: str = "big"
    word_order: str = "big"
    scale: float = 1.0
    writable: bool = True
    behaviour: Behaviour = field(default_factory=Behaviour)

    @property
    def width(self) -> int:
        """How many table entries (bits or registers) the point takes."""
        if self.table.is_bits:
            return 1
        return self.length if self.type is PointType.STRING else self.type.registers

    @property
    def writable_by_clients(self) -> bool:
        """Whether a Modbus client may write it: a writable point of a writable table (no
        function code writes input registers or discrete inputs)."""
        return self.writable and self.table in (Table.COILS, Table.HOLDING_REGISTERS)


# Read Device Identification's objects 0x00-0x06 (Application Protocol v1.1b3, 6.21), by id.
IDENTITY_OBJECTS = (
    "vendor_name",
    "product_code",
    "revision",
    "vendor_url",
    "product_name",
    "model_name",
    "user_application_name",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Read Device Identification (FC 43/14) objects; `{name}` becomes the server name.

    The basic objects (0x00-0x02) are mandatory: one a template does not give is `unknown`
    (vendor name, product code) or `0.0` (revision). The regular objects (0x03-0x06) and
    the extended ones (`extended`: id 0x80-0xFF, text) are absent unless given.
    """

    vendor_name: str = "unknown"
    product_code: str = "unknown"
    revision: str = "0.0"
    vendor_url: str | None = None
    product_name: str | None = None
    model_name: str | None = None
    user_application_name: str | None = None
    extended: tuple[tuple[int, str], ...] = ()
    # Report Server ID (FC 17): the server id byte, before the run indicator and the name.
    server_id: int = 1

    def objects(self) -> list[tuple[int, str]]:
        """(object id, text) of every object the device has, in id order."""
        given = [(oid, getattr(self, field)) for oid, field in enumerate(IDENTITY_OBJECTS)]
        return [(oid, text) for oid, text in given if text is not None] + list(self.extended)

    def field_of(self, object_id: int) -> str:
        """The config path of an object below `identity`."""
        if object_id < len(IDENTITY_OBJECTS):
            return IDENTITY_OBJECTS[object_id]
        return f"extended.{object_id:#04x}"


# The built-in default template's: the farm names itself.
FARM_IDENTITY = Identity(
    vendor_name="modbus-farm",
    product_code="MF-SIM",
    revision=__version__,
    vendor_url="https://github.com/modbus-farm",
    product_name="modbus-farm simulated device",
    model_name="default",
    user_application_name="{name}",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FileRecords:
    """A file of FC 20/21 (Read/Write File Record): `records` registers, numbered from 0."""

    number: int  # 1-65535
    records: int  # 1-10000 (record numbers 0-9999, as the spec has them)
    values: tuple[int, ...] = ()  # starting values of the first records; the rest are 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Fifo:
    """A FIFO of FC 24 (Read FIFO Queue), in a unit's holding registers: the count at
    `address`, then up to 31 queued values."""

    unit_id: int
    address: int
    values: tuple[int, ...] = ()  # starting contents


class ConnectionPolicy(StrEnum):
    """What a device does with a connection past its `max`."""

    REFUSE = "refuse"  # accept it and close it at once: the newcomer loses
    CLOSE_OLDEST = "close_oldest"  # close the oldest one to make room, as many devices do


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLimits:
    """How a device treats its client connections (`connections:` in a template).

    The defaults suit a load test: room for a SCADA, a historian and a load generator's
    share on every device, the excess refused rather than someone's connection closed, and
    connections that say nothing (or stall half-way through a frame) cleaned up. A timeout
    of 0 never fires.
    """

    max: int = 64
    policy: ConnectionPolicy = ConnectionPolicy.REFUSE
    idle_timeout_s: float = 300.0  # nothing received for this long: closed
    frame_timeout_s: float = 10.0  # a frame begun and not finished for this long: closed


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceTemplate:
    """A device: its units, points, identity, connection behaviour, and what the diagnostic
    and file functions (FC 07, 20, 21, 24) read."""

    name: str
    units: tuple[UnitLayout, ...]
    points: tuple[Point, ...] = ()
    identity: Identity = field(default_factory=Identity)
    # FC 07 Read Exception Status: the eight coils from this address of the addressed unit.
    exception_status_coil: int = 0
    files: tuple[FileRecords, ...] = ()
    fifos: tuple[Fifo, ...] = ()
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)

    def unit(self, unit_id: int) -> UnitLayout:
        return next(unit for unit in self.units if unit.unit_id == unit_id)


def default_template() -> DeviceTemplate:
    """The device `farm up --count N` serves when no config file is given.

    Unit 1 with 1000 of each table; input registers 0-3 and discrete input 0 move, so a
    SCADA pointed at the farm sees live values without any configuration.
    """
    live = (
        (
            "uptime_s",
            Table.INPUT_REGISTERS,
            0,
            Behaviour(kind=BehaviourKind.COUNTER, step=1, high=65535),
        ),
        (
            "temperature_dc",
            Table.INPUT_REGISTERS,
            1,
            Behaviour(kind=BehaviourKind.SINE, period_s=60, low=180, high=260),
        ),
        (
            "load_pct",
            Table.INPUT_REGISTERS,
            2,
            Behaviour(kind=BehaviourKind.RAMP, period_s=100, high=100),
        ),
        (
            "pressure_mbar",
            Table.INPUT_REGISTERS,
            3,
            Behaviour(kind=BehaviourKind.RANDOM_WALK, low=950, high=1050, step=2, value=1000),
        ),
        (
            "pump_running",
            Table.DISCRETE_INPUTS,
            0,
            Behaviour(kind=BehaviourKind.SQUARE, period_s=10, low=0, high=1),
        ),
    )
    points = tuple(
        Point(
            name=name,
            unit_id=1,
            table=table,
            address=address,
            type=PointType.BOOL if table.is_bits else PointType.UINT16,
            behaviour=behaviour,
        )
        for name, table, address, behaviour in live
    )
    return DeviceTemplate(
        name="default", units=(UnitLayout(unit_id=1),), points=points, identity=FARM_IDENTITY
    )


def with_connections(
    templates: dict[str, DeviceTemplate], **changes: Any
) -> dict[str, DeviceTemplate]:
    """Every template with these `ConnectionLimits` fields changed (the command line's
    --max-connections and friends win over the file's)."""
    if not changes:
        return templates
    return {
        name: replace(template, connections=replace(template.connections, **changes))
        for name, template in templates.items()
    }
