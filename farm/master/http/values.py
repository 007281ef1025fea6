"""Routes for a server's values: raw table entries by address, typed points by name.

    GET /api/v1/servers/{name}/units/{unit}/{table}?address=A&count=N
    PUT /api/v1/servers/{name}/units/{unit}/{table}     {"address": A, "values": [...]}
    GET /api/v1/servers/{name}/points/{point}
    PUT /api/v1/servers/{name}/points/{point}           {"value": 230.5}

Registers take 0-65535; coils and discrete inputs 0, 1, true or false. Unit 255 names the
device's first unit, as on the wire. A point's value is its engineering value, encoded by
its type, scale and byte/word order (farm.config.codec); one its type cannot hold is refused
(422). The API writes as the operator, not as a Modbus client: every table, read-only
points too. Values are read and written in the shared-memory banks (farm.master.fleet.inventory),
so a write is a write like a client's: counters and random walks carry on from it, while a
time-driven point (sine, ramp...) holds it until its next update.
"""

from __future__ import annotations

import math
import struct

from pydantic import BaseModel, Field

from farm.config import codec
from farm.config.templates import Point, PointType, Table
from farm.ipc.banks import UnitBank
from farm.master.fleet.inventory import (
    Inventory,
    Located,
    Overlay,
    UnknownServer,
    farm_write,
    no_overlay,
    write_point_data,
)
from farm.master.http.routes import Call, Invalid, NotFound, Route, Strict

_FLOATS = (PointType.FLOAT32, PointType.FLOAT64)


class TablePath(Strict):
    name: str = Field(description="The server's name")
    unit: int = Field(ge=0, le=255, description="Unit id (255: the device's first unit)")
    table: Table


class RegistersQuery(Strict):
    address: int = Field(0, ge=0, le=65535, description="First address, from 0")
    count: int = Field(1, ge=1, le=65536, description="How many entries")


class RegistersWrite(Strict):
    address: int = Field(ge=0, le=65535, description="First address, from 0")
    values: list[int | bool] = Field(
        min_length=1, description="Registers: 0-65535; coils and discrete inputs: 0/1/true/false"
    )


class Registers(BaseModel):
    server: str
    unit: int
    table: Table
    address: int
    values: list[int] = Field(description="Registers as unsigned 16-bit, bits as 0 or 1")


class PointPath(Strict):
    name: str = Field(description="The server's name")
    point: str = Field(description="The point's name in the server's template")


class PointWrite(Strict):
    value: float | int | bool | str = Field(
        description="Engineering value (text for string points; 0/1/true/false for bits)"
    )


class PointValue(BaseModel):
    name: str
    unit: int
    table: Table
    address: int
    type: PointType
    scale: float
    byte_order: str
    word_order: str
    writable: bool = Field(description="Whether Modbus clients may write it (the API may)")
    behaviour: str
    value: int | float | str = Field(
        description="Its engineering value now (a float that is not finite: 'nan', 'inf', '-inf')"
    )
    registers: list[int] = Field(description="Its raw table entries")


def value_routes(inventory: Inventory) -> list[Route]:
    async def read_table(call: Call) -> Registers:
        server, bank = _bank(inventory, call.path_as(TablePath))
        query = call.query_as(RegistersQuery)
        table = call.path_as(TablePath).table
        _check_range(server, bank, table, query.address, query.count, "count")
        return _registers(server, bank, table, query.address, query.count, inventory.overlay)

    async def write_table(call: Call) -> Registers:
        path = call.path_as(TablePath)
        server, bank = _bank(inventory, path)
        body = call.body_as(RegistersWrite)
        _check_range(server, bank, path.table, body.address, len(body.values), "values")
        table, address, values = path.table, body.address, body.values
        if table.is_bits:
            bits = _bits(values)
            farm_write(
                server,
                bank,
                table,
                address,
                len(bits),
                lambda: bank.write_bits(table, address, bits),
            )
        else:
            words = _words(values)
            farm_write(
                server,
                bank,
                table,
                address,
                len(words),
                lambda: bank.write_registers(table, address, words),
            )
        return _registers(server, bank, path.table, body.address, len(body.values))

    async def read_point(call: Call) -> PointValue:
        server, point = _point(inventory, call.path_as(PointPath))
        return point_value(server, point, server.banks(), inventory.overlay)

    async def write_point(call: Call) -> PointValue:
        server, point = _point(inventory, call.path_as(PointPath))
        value = call.body_as(PointWrite).value
        try:
            data = codec.encode_exact(point, codec.operator_value(point, value))
        except ValueError as error:
            raise Invalid(f"body 'value': {point.name} is {point.type}: {error}") from error
        banks = server.banks()
        bank = banks[point.unit_id]
        farm_write(
            server,
            bank,
            point.table,
            point.address,
            point.width,
            lambda: write_point_data(bank, point, data),
        )
        return point_value(server, point, banks, inventory.overlay)

    table_path = "/api/v1/servers/{name}/units/{unit}/{table}"
    point_path = "/api/v1/servers/{name}/points/{point}"
    return [
        Route(
            method="GET",
            path=table_path,
            handler=read_table,
            summary="Read table entries by address",
            path_model=TablePath,
            query=RegistersQuery,
            response=Registers,
            errors=(404,),
            tag="values",
        ),
        Route(
            method="PUT",
            path=table_path,
            handler=write_table,
            summary="Write table entries by address (any table, as the operator)",
            path_model=TablePath,
            body=RegistersWrite,
            response=Registers,
            errors=(404,),
            tag="values",
        ),
        Route(
            method="GET",
            path=point_path,
            handler=read_point,
            summary="A point's engineering value, decoded by its type, scale and byte/word order",
            path_model=PointPath,
            response=PointValue,
            errors=(404,),
            tag="values",
        ),
        Route(
            method="PUT",
            path=point_path,
            handler=write_point,
            summary="Set a point's engineering value (read-only points too: the operator's)",
            path_model=PointPath,
            body=PointWrite,
            response=PointValue,
            errors=(404,),
            tag="values",
        ),
    ]


def locate(inventory: Inventory, name: str) -> Located:
    """The server named `name`, or NotFound (404) naming it."""
    try:
        return inventory.locate(name)
    except UnknownServer as error:
        raise NotFound(str(error)) from None


def _bank(inventory: Inventory, path: TablePath) -> tuple[Located, UnitBank]:
    server = locate(inventory, path.name)
    unit = server.unit_id(path.unit)
    if unit is None:
        units = ", ".join(str(each.unit_id) for each in server.template.units)
        raise NotFound(f"server {server.name} has no unit {path.unit} (its units: {units})")
    return server, server.banks()[unit]


def _point(inventory: Inventory, path: PointPath) -> tuple[Located, Point]:
    server = locate(inventory, path.name)
    for point in server.template.points:
        if point.name == path.point:
            return server, point
    names = ", ".join(point.name for point in server.template.points) or "none"
    raise NotFound(f"server {server.name} has no point {path.point!r} (its points: {names})")


def _check_range(
    server: Located, bank: UnitBank, table: Table, address: int, count: int, field: str
) -> None:
    size = bank.size(table)
    if address >= size:
        raise Invalid(
            f"'address': {address} is past the end of {server.name}'s {table} "
            f"(unit {bank.unit_id} has {size}: 0-{size - 1})"
        )
    if not bank.in_range(table, address, count):
        raise Invalid(
            f"'{field}': {count} entries from address {address} run past the end of "
            f"{server.name}'s {table} (unit {bank.unit_id} has {size}: 0-{size - 1})"
        )


def _bits(values: list[int | bool]) -> list[bool]:
    for index, value in enumerate(values):
        if value not in (0, 1):
            raise Invalid(f"body 'values.{index}': {value!r}: a bit takes 0, 1, true or false")
    return [bool(value) for value in values]


def _words(values: list[int | bool]) -> list[int]:
    for index, value in enumerate(values):
        if isinstance(value, bool) or not 0 <= value <= 0xFFFF:
            raise Invalid(
                f"body 'values.{index}': {value!r}: a register takes 0-65535 "
                "(write signed or wider values through a point)"
            )
    return [int(value) for value in values]


def _entries(bank: UnitBank, table: Table, address: int, count: int) -> bytes:
    """Entries in bank layout: a byte per bit, two (big-endian) per register."""
    size = 1 if table.is_bits else 2
    return bytes(bank.view(table)[size * address : size * (address + count)])


def _registers(
    server: Located,
    bank: UnitBank,
    table: Table,
    address: int,
    count: int,
    overlay: Overlay = no_overlay,
) -> Registers:
    data = overlay(server.name, bank.unit_id, table, address, _entries(bank, table, address, count))
    values = list(data) if table.is_bits else list(struct.unpack(f">{count}H", data))
    return Registers(
        server=server.name, unit=bank.unit_id, table=table, address=address, values=values
    )


def point_value(
    server: Located, point: Point, banks: dict[int, UnitBank], overlay: Overlay = no_overlay
) -> PointValue:
    """A point as the API shows it (as its readers see it): its engineering value and raw
    entries, read now."""
    bank = banks[point.unit_id]
    data = _entries(bank, point.table, point.address, point.width)
    data = overlay(server.name, bank.unit_id, point.table, point.address, data)
    raw = list(data) if point.table.is_bits else list(struct.unpack(f">{point.width}H", data))
    decoded = codec.decode_one(point, data)
    value: int | float | str = decoded
    if isinstance(decoded, float):
        value = decoded = codec.at_precision(point, decoded)
    if isinstance(decoded, float) and decoded.is_integer() and point.type not in _FLOATS:
        value = int(decoded)  # 230 V as 230, not 230.0: whole numbers of integer types
    elif isinstance(decoded, float) and not math.isfinite(decoded):
        value = str(decoded)  # JSON has no NaN: "nan", "inf", "-inf" (float() reads them)
    return PointValue(
        name=point.name,
        unit=point.unit_id,
        table=point.table,
        address=point.address,
        type=point.type,
        scale=point.scale,
        byte_order=point.byte_order,
        word_order=point.word_order,
        writable=point.writable_by_clients,
        behaviour=point.behaviour.kind,
        value=value,
        registers=raw,
    )
