"""Fleets: a validated config file expanded into device templates and servers.

Second half of the config stage (config -> fleets -> plan -> ...). `load(path)` reads a file
through the schema (farm.config.schema); `FarmFile.expand()` resolves templates (with per-fleet
behaviour overrides and CSV replay columns), scales fleet counts, assigns addresses and
names, and checks what the schema alone cannot: points that overlap or run past their
table, fleets whose addresses overlap, ranges too small for their count, missing CSVs.
Every mistake is a ConfigError naming the file and the path inside it.
"""

from __future__ import annotations

import csv
import functools
import ipaddress
from dataclasses import replace
from pathlib import Path

from pydantic import ValidationError

from farm.config.growth import FleetSpec
from farm.config.plan import ServerRequest, TlsSettings
from farm.config.schema import (
    AddressingModel,
    BehaviourModel,
    FarmModel,
    FleetModel,
    PointModel,
    TemplateModel,
    TlsModel,
    describe,
    read,
)
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
    default_template,
)
from farm.errors import ConfigError

LOOPBACK_LAST = ipaddress.IPv4Address("127.255.255.254")  # 127.0.0.0/8, broadcast excluded
UNICAST_LAST = ipaddress.IPv4Address("223.255.255.255")  # multicast and reserved follow


def ip_range(addressing: AddressingModel) -> tuple[int, int]:
    """First and last address (as integers) a fleet addressed by IP may take.

    A subnet gives its host addresses (not the network and broadcast addresses, which a
    SCADA could not reach as a device), from ip_start and up to ip_end when given.
    """
    subnet = addressing.subnet
    if subnet is None:  # no end given: as far as the addresses a device can have go
        assert addressing.ip_start is not None
        first = int(addressing.ip_start)
        last = int(LOOPBACK_LAST if addressing.ip_start.is_loopback else UNICAST_LAST)
    elif subnet.prefixlen >= 31:
        first, last = int(subnet.network_address), int(subnet.broadcast_address)
    else:
        first, last = int(subnet.network_address) + 1, int(subnet.broadcast_address) - 1
    if addressing.ip_start is not None:
        first = int(addressing.ip_start)
    if addressing.ip_end is not None:
        last = int(addressing.ip_end)
    return first, last


def load(path: str | Path) -> FarmFile:
    """Read and validate a config file; raises ConfigError."""
    source = Path(path)
    data = read(source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with templates and fleets at the top")
    try:
        model = FarmModel.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, source)) from exc
    return FarmFile(source, model)


class FarmFile:
    """A validated config file, ready to expand into templates and servers."""

    def __init__(self, source: Path, model: FarmModel) -> None:
        self.source = source
        self.model = model
        self._csv_cache: dict[tuple[Path, str | int], tuple[float, ...]] = {}
        self.templates = {name: self._template(name, t) for name, t in model.templates.items()}
        self.templates.setdefault("default", default_template())
        names: set[str] = set()
        for i, fleet in enumerate(model.fleets):
            if fleet.name in names:
                raise self.fail(f"fleets[{i}].name", f"fleet name {fleet.name!r} is used twice")
            names.add(fleet.name)
        self.fleet_templates = [self._fleet_template(i, f) for i, f in enumerate(model.fleets)]

    @property
    def seed(self) -> int:
        return self.model.seed

    def fail(self, path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {path}: {message}")

    # -- templates ---------------------------------------------------------------------

    def _template(self, name: str, model: TemplateModel) -> DeviceTemplate:
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
        identity = Identity(**model.identity.model_dump())
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
        path = (self.source.parent / name).resolve()
        key = (path, column)
        if key in self._csv_cache:
            return self._csv_cache[key]
        try:
            with path.open(newline="") as handle:
                rows = list(csv.reader(handle))
        except OSError as exc:
            raise self.fail(
                f"{where}.csv", f"cannot read {name} (relative to the config file): {exc.strerror}"
            ) from exc
        if not rows:
            raise self.fail(f"{where}.csv", f"{name} is empty")
        header, body = rows[0], rows[1:]
        if isinstance(column, int):
            index = column
        elif column in header:
            index = header.index(column)
        else:
            raise self.fail(f"{where}.column", f"found {column!r}, expected one of {header}")
        try:
            values = tuple(float(row[index]) for row in body if row)
        except (IndexError, ValueError) as exc:
            raise self.fail(
                f"{where}.column", f"column {column!r} of {name} is not all numbers: {exc}"
            ) from exc
        if not values:
            raise self.fail(f"{where}.csv", f"{name} has no rows under its header")
        self._csv_cache[key] = values
        return values

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

    def _fleet_template(self, index: int, fleet: FleetModel) -> DeviceTemplate:
        where = f"fleets[{index}]"
        base = self.templates.get(fleet.template)
        if base is None:
            raise self.fail(
                f"{where}.template",
                f"found {fleet.template!r}, expected one of {sorted(self.templates)}",
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

    def _tls(self, index: int, model: TlsModel | None) -> TlsSettings | None:
        """The fleet's TLS files, relative to the config file, each checked readable."""
        if model is None:
            return None
        paths: dict[str, str | None] = {}
        for field in ("certificate", "key", "client_ca"):
            name = getattr(model, field)
            if name is None:
                paths[field] = None
                continue
            path = (self.source.parent / name).resolve()
            try:
                path.read_bytes()
            except OSError as exc:
                raise self.fail(
                    f"fleets[{index}].tls.{field}",
                    f"cannot read {name} (relative to the config file): {exc.strerror}",
                ) from exc
            paths[field] = str(path)
        certificate, key = paths["certificate"], paths["key"]
        assert certificate is not None and key is not None
        return TlsSettings(certificate=certificate, key=key, client_ca=paths["client_ca"])

    # -- fleets ------------------------------------------------------------------------

    def counts(self, total: int | None) -> list[int]:
        """Each fleet's count; with `total`, scaled in proportion so they add up to it."""
        counts = [fleet.count for fleet in self.model.fleets]
        if total is None:
            return counts
        if total < 1:
            raise ConfigError(
                f"the fleets must hold at least 1 server in all, got {total}", about=("count",)
            )
        whole = sum(counts) or len(counts)
        weights = counts if sum(counts) else [1] * len(counts)
        exact = [total * w / whole for w in weights]
        scaled = [int(x) for x in exact]
        by_remainder = sorted(range(len(exact)), key=lambda i: exact[i] - scaled[i], reverse=True)
        for i in by_remainder[: total - sum(scaled)]:
            scaled[i] += 1
        return scaled

    def expand(
        self, total: int | None = None
    ) -> tuple[dict[str, DeviceTemplate], list[ServerRequest]]:
        """Templates by name and one request per server; checks addresses and names."""
        requests: list[ServerRequest] = []
        templates: dict[str, DeviceTemplate] = {}
        for index, (fleet, count) in enumerate(
            zip(self.model.fleets, self.counts(total), strict=True)
        ):
            template = self.fleet_templates[index]
            templates[template.name] = template
            requests.extend(self._servers(index, fleet, count, template.name))
        self._check_unique(requests)
        return templates, requests

    def _servers(
        self, index: int, fleet: FleetModel, count: int, template: str
    ) -> list[ServerRequest]:
        where = f"fleets[{index}]"
        addressing = fleet.addressing
        if addressing.port_start is not None:
            last = addressing.port_end or 65535
            if last < addressing.port_start:
                raise self.fail(
                    f"{where}.addressing.port_end",
                    f"found {last}, expected at least port_start {addressing.port_start}",
                )
            capacity = last - addressing.port_start + 1
            field, unit = "port_end" if addressing.port_end else "port_start", "ports"
            addresses = [
                (addressing.host, addressing.port_start + i) for i in range(min(count, capacity))
            ]
        else:
            first, last = ip_range(addressing)
            if last < first:
                raise self.fail(
                    f"{where}.addressing.ip_end",
                    f"found {addressing.ip_end}, expected at least "
                    f"{addressing.ip_start or 'the subnet start'}",
                )
            capacity = last - first + 1
            field = "ip_end" if addressing.ip_end else "ip_start"
            if addressing.subnet is not None and not addressing.ip_end:
                field = "subnet"
            unit = "addresses"
            addresses = [
                (str(ipaddress.IPv4Address(first + i)), addressing.port)
                for i in range(min(count, capacity))
            ]
        if count > capacity:
            raise self.fail(
                f"{where}.addressing.{field}",
                f"count {count} needs {count} {unit} but the range holds {capacity}",
            )
        tls = self._tls(index, fleet.tls)
        names = []
        for i in range(count):
            try:
                names.append(fleet.name_pattern.format(i=i, n=i + 1, fleet=fleet.name))
            except (KeyError, IndexError, ValueError) as exc:
                raise self.fail(
                    f"{where}.name_pattern",
                    f"{fleet.name_pattern!r} cannot be formatted ({exc}); "
                    "use {i}, {n} and {fleet}",
                ) from exc
        return [
            ServerRequest(
                name=name,
                fleet=fleet.name,
                host=host,
                port=port,
                template=template,
                transport=fleet.transport,
                tls=tls,
            )
            for name, (host, port) in zip(names, addresses, strict=True)
        ]

    def routed_networks(self, total: int | None = None) -> list[ipaddress.IPv4Network]:
        """The networks, outside 127.0.0.0/8, that the fleets' own addresses fill.

        What the AnyIP route must make local on the farm host and what a SCADA host must
        route to it (`farm net plan`): each fleet's subnet, or the smallest networks that
        cover its ip_start..ip_end range.
        """
        loopback = ipaddress.IPv4Network("127.0.0.0/8")
        found: list[ipaddress.IPv4Network] = []
        for fleet, count in zip(self.model.fleets, self.counts(total), strict=True):
            addressing = fleet.addressing
            if addressing.subnet is not None:
                networks = [addressing.subnet]
            elif addressing.ip_start is not None and count > 0:
                first, last = ip_range(addressing)
                end = ipaddress.IPv4Address(min(last, first + count - 1))
                networks = list(ipaddress.summarize_address_range(addressing.ip_start, end))
            else:
                continue
            found.extend(n for n in networks if not n.subnet_of(loopback))
        return list(ipaddress.collapse_addresses(found))

    def _check_unique(self, requests: list[ServerRequest]) -> None:
        fleets = {f.name: i for i, f in enumerate(self.model.fleets)}
        seen_names: dict[str, str] = {}
        # UDP and TCP ports are separate: a udp fleet may share a port number with a tcp one.
        by_port: dict[tuple[bool, int], dict[str, str]] = {}
        for request in requests:
            where = f"fleets[{fleets[request.fleet]}]"
            if request.name in seen_names:
                raise self.fail(
                    f"{where}.name_pattern",
                    f"server name {request.name!r} is also made by fleet "
                    f"{seen_names[request.name]}",
                )
            seen_names[request.name] = request.fleet
            hosts = by_port.setdefault((request.transport == "udp", request.port), {})
            wildcard = request.host in ("0.0.0.0", "::")
            clash = hosts.get(request.host) or (
                next(iter(hosts.values())) if wildcard and hosts else None
            )
            clash = clash or hosts.get("0.0.0.0") or hosts.get("::")
            if clash is not None:
                raise self.fail(
                    f"{where}.addressing", f"{request.host}:{request.port} overlaps fleet {clash}"
                )
            hosts[request.host] = request.fleet

    def fleet_specs(self, counts: list[int]) -> tuple[FleetSpec, ...]:
        """Each fleet at its count, as it can grow (farm.config.growth)."""
        return tuple(
            FleetSpec(
                name=fleet.name,
                template=self.fleet_templates[index].name,
                count=count,
                capacity=_capacity(fleet.addressing),
                servers=functools.partial(
                    self._servers, index, fleet, template=self.fleet_templates[index].name
                ),
            )
            for index, (fleet, count) in enumerate(zip(self.model.fleets, counts, strict=True))
        )


def _capacity(addressing: AddressingModel) -> int:
    """How many servers a fleet's addressing holds (as `FarmFile._servers` assigns them)."""
    if addressing.port_start is not None:
        return max(0, (addressing.port_end or 65535) - addressing.port_start + 1)
    first, last = ip_range(addressing)
    return max(0, last - first + 1)
