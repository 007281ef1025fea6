"""What a simulated device is: units, table sizes, live points and identity.

First stop in the data flow (config -> plan -> ...): a `DeviceTemplate` is what a config
file or the built-in default describes; the plan stamps out servers from it. Everything here
is frozen and picklable, because templates travel to workers inside `Assign`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Behaviour:
    """How a live point moves over time (see farm.behaviours for the formulas).

    kind: constant | counter | ramp | sine | square | random_walk
    """

    kind: str
    period_s: float = 60.0
    low: float = 0.0
    high: float = 1000.0
    step: float = 1.0
    value: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Point:
    """A register (uint16) or bit whose value a behaviour drives."""

    name: str
    unit_id: int
    table: Table
    address: int
    behaviour: Behaviour


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Read Device Identification (FC 43/14) objects; `{name}` becomes the server name."""

    vendor_name: str = "modbus-farm"
    product_code: str = "MF-SIM"
    revision: str = __version__
    vendor_url: str = "https://github.com/modbus-farm"
    product_name: str = "modbus-farm simulated device"
    model_name: str = "default"
    user_application_name: str = "{name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceTemplate:
    """A device: its units, live points and identity."""

    name: str
    units: tuple[UnitLayout, ...]
    points: tuple[Point, ...] = ()
    identity: Identity = field(default_factory=Identity)
    tick_interval_s: float = 1.0


def default_template() -> DeviceTemplate:
    """The device `farm up --count N` serves when no config file is given.

    Unit 1 with 1000 of each table; input registers 0-3 and discrete input 0 move, so a
    SCADA pointed at the farm sees live values without any configuration.
    """
    live = (
        ("uptime_s", Table.INPUT_REGISTERS, 0, Behaviour(kind="counter", step=1, high=65535)),
        (
            "temperature_dc",
            Table.INPUT_REGISTERS,
            1,
            Behaviour(kind="sine", period_s=60, low=180, high=260),
        ),
        ("load_pct", Table.INPUT_REGISTERS, 2, Behaviour(kind="ramp", period_s=100, high=100)),
        (
            "pressure_mbar",
            Table.INPUT_REGISTERS,
            3,
            Behaviour(kind="random_walk", low=950, high=1050, step=2, value=1000),
        ),
        ("pump_running", Table.DISCRETE_INPUTS, 0, Behaviour(kind="square", period_s=10, high=1)),
    )
    points = tuple(
        Point(name=name, unit_id=1, table=table, address=address, behaviour=behaviour)
        for name, table, address, behaviour in live
    )
    return DeviceTemplate(name="default", units=(UnitLayout(unit_id=1),), points=points)
