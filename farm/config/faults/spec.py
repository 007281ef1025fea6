"""Faults: what a misbehaving device does, to which servers, and when. Pure data.

A `FaultSpec` is what a user asks for (the API's body, the CLI's options, the Python
client's arguments), validated here at the boundary; `parse_fault` turns bad input into a
`FaultSpecError` whose one line names the field and says what to fix. The master resolves
the spec's `Target` to server names (`select`), keeps the fault in its table
(farm.master.faults.table) and hands each worker the `FaultRule`s of its servers; the worker
applies them (farm.worker.faults.hooks).

Each kind's model is made here from its entry in the registry (farm.config.faults.kinds:
its parameters' types, defaults, bounds and help) on its family's base: request kinds can be
narrowed to function codes, a unit id, an address range, the role in a TLS client's
certificate and a probability per request; server kinds (offline, reboot) take none of
those; value kinds (stuck, spike, drift, ...) name a point instead.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, FiniteFloat, TypeAdapter, ValidationError, create_model, model_validator

from farm.config.faults.kinds import (
    BY_NAME,
    KIND_TABLE,
    KINDS,
    POINT,
    SERVER_KINDS,
    VALUE_KINDS,
    Kind,
    Param,
)
from farm.config.faults.rules import FaultRule
from farm.config.faults.selection import Seconds, Target, parse_duration, pick_fraction, select
from farm.config.faults.selection import Strict as _Strict
from farm.errors import ConfigError

__all__ = [
    "KINDS",
    "MODELS",
    "SERVER_KINDS",
    "VALUE_KINDS",
    "FaultRule",
    "FaultSpec",
    "FaultSpecError",
    "Seconds",
    "Target",
    "parse_duration",
    "parse_fault",
    "pick_fraction",
    "select",
]

_NAMED = re.compile(r"^(\w+): (.*)$")


class FaultSpecError(ConfigError):
    """A fault that cannot be applied; `field` names the part to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class AddressRange(_Strict):
    start: int = Field(ge=0, le=65535)
    end: int = Field(ge=0, le=65535)

    @model_validator(mode="after")
    def _ordered(self) -> AddressRange:
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) must not be below start ({self.start})")
        return self


class FaultModel(_Strict):
    """What every fault model has (each kind's is made from the registry by `_model`)."""

    if TYPE_CHECKING:  # fields of every family, declared by each in its own order
        kind: str
        target: Target
        start_in: float
        duration: float | None

        def __getattr__(self, name: str) -> Any: ...  # the kind's own parameters

    @model_validator(mode="after")
    def _kind_check(self) -> FaultModel:
        kind = BY_NAME[self.kind]
        params = {param.name: getattr(self, param.name) for param in kind.params}
        message = kind.check(params) if kind.check is not None else None
        if message is not None:
            raise ValueError(message)
        return self


class _RequestFault(FaultModel):
    target: Target
    function_codes: tuple[Annotated[int, Field(ge=1, le=127)], ...] = ()
    unit: int | None = Field(None, ge=0, le=255)
    # The role a TLS client's certificate names (Modbus/TCP Security): only its requests.
    role: str | None = Field(None, min_length=1, max_length=200)
    addresses: AddressRange | None = None
    probability: float = Field(1.0, gt=0, le=1)
    start_in: Seconds = Field(0.0, ge=0)
    duration: Seconds | None = Field(None, gt=0)


class _ServerFault(_RequestFault):
    """Offline and reboot act on the server, not on requests: no request filters."""

    @model_validator(mode="after")
    def _no_filters(self) -> _ServerFault:
        given = {
            "function_codes": bool(self.function_codes),
            "unit": self.unit is not None,
            "role": self.role is not None,
            "addresses": self.addresses is not None,
            "probability": self.probability != 1.0,
        }
        for name, set_here in given.items():
            if set_here:
                raise ValueError(f"{name}: does not apply to a server that is down; remove it")
        return self


class _ValueFault(FaultModel):
    """What every value fault has: servers, a point by name, when and for how long."""

    target: Target
    point: str = Field(min_length=1, description="The point's name in the servers' template")
    start_in: Seconds = Field(0.0, ge=0)
    duration: Seconds | None = Field(None, gt=0)


_FAMILIES: dict[str, type[FaultModel]] = {
    "request": _RequestFault,
    "server": _ServerFault,
    "value": _ValueFault,
}
_TYPES: dict[str, Any] = {
    "number": float,
    "finite": FiniteFloat,
    "integer": int,
    "seconds": Seconds,
    "text": str,
}


def _field(param: Param) -> tuple[Any, Any]:
    """A parameter as a pydantic field: its type, default, bounds and description."""
    annotation = Literal[param.choices] if param.choices else _TYPES[param.type]
    if param.default is None:
        annotation = annotation | None
    default = ... if param.required else param.default
    unit = f" ({param.unit})" if param.unit else ""
    description = param.help[0].upper() + param.help[1:] + unit
    return annotation, Field(
        default, description=description, ge=param.ge, gt=param.gt, le=param.le
    )


def _model(kind: Kind) -> type[FaultModel]:
    """The pydantic model of one kind, named as the API documents it ('DelayFault')."""
    fields: dict[str, Any] = {"kind": (Literal[kind.name], ...)}
    for param in kind.params:
        if param is not POINT:  # every value fault's, declared by its family
            fields[param.name] = _field(param)
    if kind.duration is not None:  # a duration of its own, never "until cleared"
        fields["duration"] = (Seconds, Field(kind.duration, gt=0))
    name = "".join(part.capitalize() for part in kind.name.split("_")) + "Fault"
    return create_model(
        name, __base__=_FAMILIES[kind.family], __module__=__name__, __doc__=kind.help, **fields
    )


MODELS: dict[str, type[FaultModel]] = {kind.name: _model(kind) for kind in KIND_TABLE}
DelayFault = MODELS["delay"]  # by its name, for isinstance (tests/test_faults_model.py)

if TYPE_CHECKING:
    FaultSpec = FaultModel
else:
    FaultSpec = Annotated[Union[tuple(MODELS.values())], Field(discriminator="kind")]  # noqa: UP007
_ADAPTER: TypeAdapter[FaultSpec] = TypeAdapter(FaultSpec)


def parse_fault(data: Any) -> FaultSpec:
    """A validated fault from JSON-like data; raises FaultSpecError naming the field."""
    if isinstance(data, dict) and data.get("kind") not in KINDS:
        found = data.get("kind")
        what = "is missing" if found is None else f"{found!r} is not a fault kind"
        raise FaultSpecError("kind", f"{what}; use one of {', '.join(KINDS)}")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as error:
        raise _describe(error) from None


def fault_schema() -> dict[str, Any]:
    """The JSON schema of a fault request (for the API's OpenAPI document)."""
    return _ADAPTER.json_schema()


def _describe(error: ValidationError) -> FaultSpecError:
    first = error.errors()[0]
    # The first element of the location is the kind's tag; the rest is the field's path.
    location = [str(part) for part in first["loc"][1:] if not str(part).startswith("function-")]
    field = ".".join(location) or "body"
    message = first["msg"].removeprefix("Value error, ")
    named = _NAMED.match(message)
    if named:  # a check across fields names the one to fix at the start of its message
        field, message = ".".join([*location, named.group(1)]), named.group(2)
    if first["type"] == "missing":
        message = "required, missing"
    elif first["type"] == "extra_forbidden":
        message = "not a parameter of this kind; remove it (see `farm fault add --help`)"
    found = first.get("input")
    if first["type"] != "missing" and not isinstance(found, dict | list | tuple | type(None)):
        message += f" (found {found!r})"
    return FaultSpecError(field, message)


def rule(fault_id: int, spec: FaultSpec, started: float = 0.0) -> FaultRule:
    """The fault as a worker applies it; `started`: when it began (master's monotonic clock)."""
    params: dict[str, Any] = {}
    extra: list[tuple[str, float | str]] = []
    for param in BY_NAME[spec.kind].params:
        value = getattr(spec, param.name)
        if value is None:
            continue  # FaultRule's own default says "not given"
        if param.wire_number:
            value = float(value)
        if param.field in _RULE_FIELDS:
            params[param.field] = value
        else:
            extra.append((param.name, value))
    if spec.kind in VALUE_KINDS:
        return FaultRule(id=fault_id, kind=spec.kind, started=started, extra=tuple(extra), **params)
    addresses = spec.addresses or AddressRange(start=0, end=65535)
    return FaultRule(
        id=fault_id,
        kind=spec.kind,
        probability=spec.probability,
        function_codes=spec.function_codes,
        unit=spec.unit,
        role=spec.role,
        first_address=addresses.start,
        last_address=addresses.end,
        extra=tuple(extra),
        **params,
    )


_RULE_FIELDS = frozenset(field.name for field in dataclasses.fields(FaultRule)) - {"extra"}
