"""Template reader: the `templates:` section of a config file made into device templates.

Part of the config stage, used by farm.config.fleets (`FarmFile`): builds each DeviceTemplate
(farm.config.templates) from its schema model (farm.config.schema), reads the CSV columns that
replay behaviours name (farm.config.replay_csv, each read once), applies a fleet's
behaviour overrides, and checks what the schema alone cannot: units or files listed twice,
points that overlap or run past their table, FIFOs that do not fit. Every mistake is a
ConfigError naming the file and the path inside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from farm.config.replay_csv import csv_column
from farm.config.schema import BehaviourModel, FleetModel, PointModel, TemplateModel
from farm.config.templates import (
    Behaviour,
    BehaviourKind,
    ConnectionLimits,
    DeviceTemplate,
    Fifo,
    FileRecords,
    Identity,
    Point,
    PointType,
    Table,
    UnitLayout,
)
from farm.errors import ConfigError, InputError
from farm.modbus import deviceid


class TemplateReader:
    """Makes the templates of one config file, which CSV paths are relative to."""

    def __init__(self, source: Path, allowed: Sequence[Path] = ()) -> None:
        self.source = source
        self.allowed = allowed  # places outside the config's directory the user allowed
        self._csv_cache: dict[tuple[str, str | int], tuple[float, ...]] = {}

    def fail(self, path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {path}: {message}")

    def template(self, name: str, model: TemplateModel) -> DeviceTemplate:
        """The device a `templates:` entry describes, its layout checked."""
        where = f"templates.{name}"
        units = tuple(UnitLayout(**unit.model_dump()) for unit in model.units)
        seen: set[int] = set()
        for i, unit in enumerate(units):
            if unit.unit_id in seen:
                raise self.fail(
                    f"{where}.units[{i}].unit_id", f"unit {unit.unit_id} is listed twice"
                )
            seen.add(unit.unit_id)
        points = tuple(
            self._point(f"{where}.points[{i}]", p, units) for i, p in enumerate(model.points)
        )
        self._check_layout(where, points, units)
        identity = self._identity(f"{where}.identity", model)
        return DeviceTemplate(
            name=name,
            units=units,
            points=points,
            identity=identity,
            exception_status_coil=model.exception_status_coil,
            files=self._files(where, model),
            fifos=self._fifos(where, model, units),
            connections=ConnectionLimits(**model.connections.model_dump()),
        )

    def _identity(self, where: str, model: TemplateModel) -> Identity:
        given = model.identity.model_dump()
        for object_id in given["extended"]:
            if not deviceid.FIRST_EXTENDED <= object_id <= 0xFF:
                raise self.fail(
                    f"{where}.extended", f"found object id {object_id:#04x}, expected 0x80-0xFF"
                )
        given["extended"] = tuple(sorted(given["extended"].items()))
        identity = Identity(**given)
        problem = identity_problem(identity, "")
        if problem is not None:
            raise self.fail(f"{where}.{problem[0]}", problem[1])
        return identity

    def _files(self, where: str, model: TemplateModel) -> tuple[FileRecords, ...]:
        numbers: set[int] = set()
        for i, file in enumerate(model.files):
            if file.number in numbers:
                raise self.fail(f"{where}.files[{i}].number", f"file {file.number} is listed twice")
            numbers.add(file.number)
        return tuple(
            FileRecords(number=f.number, records=f.records, values=tuple(f.values))
            for f in model.files
        )

    def _fifos(
        self, where: str, model: TemplateModel, units: tuple[UnitLayout, ...]
    ) -> tuple[Fifo, ...]:
        fifos = []
        for i, fifo in enumerate(model.fifos):
            unit_id = units[0].unit_id if fifo.unit_id is None else fifo.unit_id
            unit = next((u for u in units if u.unit_id == unit_id), None)
            if unit is None:
                raise self.fail(
                    f"{where}.fifos[{i}].unit_id",
                    f"found {unit_id}, expected one of the template's units",
                )
            # The count register and room for the 31 values a FIFO may hold.
            if fifo.address + 32 > unit.holding_registers:
                raise self.fail(
                    f"{where}.fifos[{i}].address",
                    f"a FIFO takes holding registers {fifo.address}-{fifo.address + 31} "
                    f"(count, then 31 values) but unit {unit_id} has {unit.holding_registers}",
                )
            fifos.append(Fifo(unit_id=unit_id, address=fifo.address, values=tuple(fifo.values)))
        return tuple(fifos)

    def _point(self, where: str, model: PointModel, units: tuple[UnitLayout, ...]) -> Point:
        unit_id = units[0].unit_id if model.unit_id is None else model.unit_id
        if unit_id not in {u.unit_id for u in units}:
            raise self.fail(
                f"{where}.unit_id", f"found {unit_id}, expected one of the template's units"
            )
        kind = model.type or (PointType.BOOL if model.table.is_bits else PointType.UINT16)
        if model.behaviour is not None:
            behaviour = self._behaviour(f"{where}.behaviour", model.behaviour)
        elif isinstance(model.value, str):
            behaviour = Behaviour(text=model.value)
        else:
            behaviour = Behaviour(value=model.value or 0.0)
        return Point(
            name=model.name,
            unit_id=unit_id,
            table=model.table,
            address=model.address,
            type=kind,
            length=model.length or 0,
            byte_order=model.byte_order,
            word_order=model.word_order,
            scale=model.scale,
            writable=model.writable,
            behaviour=behaviour,
        )

    def _behaviour(self, where: str, model: BehaviourModel) -> Behaviour:
        samples: tuple[float, ...] = ()
        if model.kind is BehaviourKind.REPLAY:
            assert model.csv is not None and model.column is not None
            samples = self._csv_column(where, model.csv, model.column)
        fields = model.model_dump(exclude={"csv", "column"})
        return Behaviour(**fields, samples=samples)

    def _csv_column(self, where: str, name: str, column: str | int) -> tuple[float, ...]:
        key = (name, column)
        if key not in self._csv_cache:
            try:
                found = csv_column(self.source.parent, name, column, self.allowed)
            except InputError as exc:
                raise self.fail(f"{where}.csv", f"{exc} (relative to the config file)") from exc
            self._csv_cache[key] = found
        return self._csv_cache[key]

    def _check_layout(
        self, where: str, points: tuple[Point, ...], units: tuple[UnitLayout, ...]
    ) -> None:
        taken: dict[tuple[int, Table, int], str] = {}
        names: set[str] = set()
        for i, point in enumerate(points):
            here = f"{where}.points[{i}]"
            if point.name in names:
                raise self.fail(f"{here}.name", f"point name {point.name!r} is used twice")
            names.add(point.name)
            size = next(u for u in units if u.unit_id == point.unit_id).size(point.table)
            if point.address + point.width > size:
                raise self.fail(
                    f"{here}.address",
                    f"{point.name} takes {point.table} {point.address}-"
                    f"{point.address + point.width - 1} but unit {point.unit_id} has {size}",
                )
            for address in range(point.address, point.address + point.width):
                other = taken.get((point.unit_id, point.table, address))
                if other is not None:
                    raise self.fail(
                        f"{here}.address",
                        f"{point.name} overlaps {other} at {point.table} {address}",
                    )
                taken[(point.unit_id, point.table, address)] = point.name

    def fleet_template(
        self, index: int, fleet: FleetModel, templates: dict[str, DeviceTemplate]
    ) -> DeviceTemplate:
        """The template a fleet names, with the fleet's behaviour overrides applied."""
        where = f"fleets[{index}]"
        base = templates.get(fleet.template)
        if base is None:
            raise self.fail(
                f"{where}.template",
                f"found {fleet.template!r}, expected one of {sorted(templates)}",
            )
        if not fleet.overrides:
            return base
        by_name = {p.name: p for p in base.points}
        points = list(base.points)
        for name, override in fleet.overrides.items():
            if name not in by_name:
                raise self.fail(
                    f"{where}.overrides.{name}", f"template {base.name} has no point {name!r}"
                )
            behaviour = self._behaviour(f"{where}.overrides.{name}", override)
            points[points.index(by_name[name])] = replace(by_name[name], behaviour=behaviour)
        return replace(base, name=f"{base.name}@{fleet.name}", points=tuple(points))


def identity_problem(identity: Identity, server_name: str) -> tuple[str, str] | None:
    """(field below `identity`, what is wrong) for an FC 43/14 object that is not ASCII
    (6.21 defines them as ASCII strings) or cannot fit in one answer once `{name}` is
    `server_name`; None when every object is fine."""
    for object_id, text in identity.objects():
        value = text.replace("{name}", server_name)
        field = identity.field_of(object_id)
        if not value.isascii():
            return field, f"{text!r} is not ASCII (Read Device Identification objects are)"
        if len(value) > deviceid.MAX_OBJECT:
            made = f" for server {server_name!r}" if "{name}" in text and server_name else ""
            return field, (
                f"{len(value)} characters{made}, more than the {deviceid.MAX_OBJECT} that one "
                "FC 43/14 answer holds (a PDU is 253 bytes)"
            )
    return None
