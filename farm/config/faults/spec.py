"""Faults: what a misbehaving device does, to which servers, and when. Pure data.

A `FaultSpec` is what a user asks for (the API's body, the CLI's options, the Python
client's arguments), validated here at the boundary; `parse_fault` turns bad input into a
`FaultSpecError` whose one line names the field and says what to fix. The master resolves
the spec's `Target` to server names (`select`), keeps the fault in its table
(farm.master.faults.table) and hands each worker the `FaultRule`s of its servers; the worker
applies them (farm.worker.faults.hooks).

Kinds and their parameters:
    delay       ms, jitter_ms, distribution (fixed: ms; uniform: ms +- jitter_ms;
                normal: mean ms, standard deviation jitter_ms); answers keep request order
    exception   code (1-11): the request is not carried out, the answer is that exception
    drop        no answer, connection kept (the request is not carried out)
    disconnect  the connection is closed (FIN) instead of answering
    reset       the connection is reset (RST) instead of answering
    offline     the server's port is closed (connections refused) for the fault's duration
    garble      mode random (PDU bytes replaced), truncate (frame cut short), length
                (wrong MBAP length field)
    wrong_tid   a valid answer carrying another transaction id
    wrong_unit  a valid answer carrying another unit id
    slice       the answer leaves in `segments` pieces, `gap_ms` apart
    reboot      connections dropped, offline for the fault's duration (default 5 s), then
                back with the template's starting values (as after a power cycle)
Every kind but offline and reboot can be narrowed to function codes, a unit id, an address
range, the role in a TLS client's certificate, and a probability per request. The value
kinds (stuck, spike, drift, offset, scale, out_of_range, nan, flap) act on a point by name
instead: farm.config.faults.value_spec.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from farm.config.faults.rules import KINDS, SERVER_KINDS, VALUE_KINDS, FaultRule
from farm.config.faults.selection import Seconds, Target, parse_duration, pick_fraction, select
from farm.config.faults.selection import Strict as _Strict
from farm.config.faults.value_spec import VALUE_FAULTS, ValueFault, value_params
from farm.errors import ConfigError

__all__ = [
    "KINDS",
    "SERVER_KINDS",
    "VALUE_KINDS",
    "FaultRule",
    "FaultSpec",
    "FaultSpecError",
    "Seconds",
    "Target",
    "ValueFault",
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


class _Fault(_Strict):
    target: Target
    function_codes: tuple[Annotated[int, Field(ge=1, le=127)], ...] = ()
    unit: int | None = Field(None, ge=0, le=255)
    # The role a TLS client's certificate names (Modbus/TCP Security): only its requests.
    role: str | None = Field(None, min_length=1, max_length=200)
    addresses: AddressRange | None = None
    probability: float = Field(1.0, gt=0, le=1)
    start_in: Seconds = Field(0.0, ge=0)
    duration: Seconds | None = Field(None, gt=0)


class DelayFault(_Fault):
    kind: Literal["delay"]
    ms: float = Field(ge=0, le=600_000)
    jitter_ms: float = Field(0.0, ge=0, le=600_000)
    distribution: Literal["fixed", "uniform", "normal"] = "fixed"

    @model_validator(mode="after")
    def _spread(self) -> DelayFault:
        if self.distribution == "fixed" and self.jitter_ms:
            raise ValueError("jitter_ms: needs distribution uniform or normal")
        if self.distribution != "fixed" and not self.jitter_ms:
            raise ValueError(f"jitter_ms: a {self.distribution} delay needs it above 0")
        return self


class ExceptionFault(_Fault):
    kind: Literal["exception"]
    code: int = Field(ge=1, le=11)


class DropFault(_Fault):
    kind: Literal["drop"]


class DisconnectFault(_Fault):
    kind: Literal["disconnect"]


class ResetFault(_Fault):
    kind: Literal["reset"]


class GarbleFault(_Fault):
    kind: Literal["garble"]
    mode: Literal["random", "truncate", "length"] = "random"


class WrongTidFault(_Fault):
    kind: Literal["wrong_tid"]


class WrongUnitFault(_Fault):
    kind: Literal["wrong_unit"]


class SliceFault(_Fault):
    kind: Literal["slice"]
    segments: int = Field(2, ge=2, le=64)
    gap_ms: float = Field(50.0, ge=0, le=60_000)


class _ServerFault(_Fault):
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


class OfflineFault(_ServerFault):
    kind: Literal["offline"]


class RebootFault(_ServerFault):
    kind: Literal["reboot"]
    duration: Seconds = Field(5.0, gt=0)  # how long it stays down


FaultSpec = Annotated[
    DelayFault
    | ExceptionFault
    | DropFault
    | DisconnectFault
    | ResetFault
    | OfflineFault
    | GarbleFault
    | WrongTidFault
    | WrongUnitFault
    | SliceFault
    | RebootFault
    | ValueFault,
    Field(discriminator="kind"),
]
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
    if isinstance(spec, VALUE_FAULTS):
        return FaultRule(id=fault_id, kind=spec.kind, started=started, **value_params(spec))
    params = spec.model_dump(include={"ms", "jitter_ms", "distribution", "code", "mode"})
    if isinstance(spec, SliceFault):
        params.update(segments=spec.segments, gap_ms=spec.gap_ms)
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
        **params,
    )
