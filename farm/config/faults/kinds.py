"""Every fault kind, declared once: its family, its parameters and how it reads. Pure data.

The one place to add a kind. Everything else is derived from `KIND_TABLE`:
    farm.config.faults.spec      the pydantic model of each kind (API body, scenario steps,
                                 OpenAPI components, hence the fleet view's fault form)
    farm.config.faults.rules     `FaultRule`'s fields a parameter travels in (`Param.wire`)
    farm.config.faults.value_rules   which points a value kind may act on (`Kind.acts_on`)
    farm.cli.faults              `farm fault add KIND` and one option per parameter name
    farm.master.faults.entry     the log text (`shown`)
    farm.ipc.stats, metrics      one injection counter and one `kind` label value per kind
    farm.master.fleetview        each kind's letter (`mark`) in the page's cells and legend
A kind's effect is its family's: a request kind's in the worker's hooks
(farm.worker.faults.hooks), a value kind's in the reading rule (value_rules.reading), a
server kind's in the master (farm.master.faults.effects). No pydantic here: workers import it.

Families:
    request  acts on requests: may be narrowed to function codes, a unit, addresses, a TLS
             role and a probability per request
    server   takes the whole server down (its port closed): no request filters
    value    a named point reads wrong while the device answers fine (`point` is required)
The order of KIND_TABLE is the order of metrics' label values and counter slots.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Family = Literal["request", "server", "value"]
# What a parameter takes: a number (float), a finite number, a whole number, a duration
# (500ms, 30s, 5m or seconds) or text (with `choices`, one of them).
ValueType = Literal["number", "finite", "integer", "seconds", "text"]
# Which points a value kind can act on (value_rules.unfit).
ActsOn = Literal["numbers_and_bools", "numbers", "floats", "bools"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()  # a parameter without a default


@dataclass(frozen=True, slots=True, kw_only=True)
class Param:
    """One parameter of a kind, as every derived place names, bounds and explains it."""

    name: str
    type: ValueType
    help: str  # one short line, said after the kind's name: "delay: milliseconds"
    default: Any = REQUIRED  # REQUIRED, a value, or None (the parameter is optional)
    choices: tuple[str, ...] = ()
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    unit: str = ""  # of the number: "ms", "s", "per s"
    wire: str = ""  # the FaultRule field it travels in (default: its own name)
    wire_number: bool = False  # text sent as a float on the pipe ("inf" -> inf)
    quiet_default: bool = False  # `farm fault list` leaves it out at its default

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def field(self) -> str:
        return self.wire or self.name


Check = Callable[[Mapping[str, Any]], "str | None"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Kind:
    """A fault kind: its name, family, parameters, a line of help and checks across fields."""

    name: str
    # One capital letter, its own: how the fleet view marks a server under this kind, in a
    # cell too small for the name (farm.master.fleetview).
    mark: str
    family: Family
    help: str
    params: tuple[Param, ...] = ()
    # A duration of its own: the default, and it cannot be "until cleared" (None: the
    # family's, optional, until cleared).
    duration: float | None = None
    # "field: message" when the parameters do not go together, else None.
    check: Check | None = None
    acts_on: ActsOn = "numbers_and_bools"  # value kinds only
    # Parameters that, beside the required ones, make a valid example (tests, docs).
    example: tuple[tuple[str, Any], ...] = ()


def _spread(params: Mapping[str, Any]) -> str | None:
    distribution, jitter = params["distribution"], params["jitter_ms"]
    if distribution == "fixed" and jitter:
        return "jitter_ms: needs distribution uniform or normal"
    if distribution != "fixed" and not jitter:
        return f"jitter_ms: a {distribution} delay needs it above 0"
    return None


def _one_jump(params: Mapping[str, Any]) -> str | None:
    if (params["value"] is None) == (params["by"] is None):
        return "value: give value (jump to) or by (jump by), one of them"
    return None


def _margin_for_limits(params: Mapping[str, Any]) -> str | None:
    if params["beyond"] == "type" and params["margin"] is not None:
        return "margin: applies to beyond limits only; remove it"
    return None


# The point every value kind names (its own parameter, first of each value kind's).
POINT = Param(name="point", type="text", help="the point, by name")

KIND_TABLE: tuple[Kind, ...] = (
    Kind(
        name="delay",
        mark="D",
        family="request",
        help="answers late (fixed, uniform ms +- jitter_ms, normal: mean ms, sd jitter_ms); "
        "answers keep request order",
        params=(
            Param(name="ms", type="number", help="milliseconds (the mean if spread)", unit="ms",
                  ge=0, le=600_000),
            Param(name="jitter_ms", type="number", help="spread (uniform +-, normal sd)",
                  unit="ms", default=0.0, ge=0, le=600_000, quiet_default=True),
            Param(name="distribution", type="text", help="fixed, uniform or normal",
                  choices=("fixed", "uniform", "normal"), default="fixed", quiet_default=True),
        ),
        check=_spread,
    ),
    Kind(
        name="exception",
        mark="E",
        family="request",
        help="the request is not carried out; the answer is that exception",
        params=(Param(name="code", type="integer", help="code 1-11 (6: server busy)", ge=1,
                      le=11),),
    ),
    Kind(name="drop", mark="X", family="request",
         help="no answer, connection kept (the request is not carried out)"),
    Kind(name="disconnect", mark="C", family="request",
         help="the connection is closed (FIN) instead of answering"),
    Kind(name="reset", mark="R", family="request",
         help="the connection is reset (RST) instead of answering"),
    Kind(name="offline", mark="O", family="server",
         help="the server's port is closed (connections refused) for the fault's duration"),
    Kind(
        name="garble",
        mark="G",
        family="request",
        help="a broken answer: PDU bytes replaced, frame cut short or a wrong length field",
        params=(Param(name="mode", type="text", help="random, truncate or length",
                      choices=("random", "truncate", "length"), default="random"),),
    ),
    Kind(name="wrong_tid", mark="T", family="request",
         help="a valid answer carrying another transaction id"),
    Kind(name="wrong_unit", mark="U", family="request",
         help="a valid answer carrying another unit id"),
    Kind(
        name="slice",
        mark="L",
        family="request",
        help="the answer leaves in pieces, a gap apart",
        params=(
            Param(name="segments", type="integer", help="pieces per answer", default=2, ge=2,
                  le=64),
            Param(name="gap_ms", type="number", help="milliseconds between pieces", unit="ms",
                  default=50.0, ge=0, le=60_000),
        ),
    ),
    Kind(
        name="reboot",
        mark="B",
        family="server",
        help="connections dropped, offline for the fault's duration, then back with the "
        "template's starting values (as after a power cycle)",
        duration=5.0,
    ),
    Kind(
        name="stuck",
        mark="S",
        family="value",
        help="the point reads `value`, or what it read when the fault began",
        params=(POINT, Param(name="value", type="finite", help="at this (default: its value then)",
                             default=None)),
    ),
    Kind(
        name="spike",
        mark="P",
        family="value",
        help="it reads `value`, or its true value + `by`, for the fault's duration",
        params=(
            POINT,
            Param(name="value", type="finite", help="jump to this value", default=None),
            Param(name="by", type="finite", help="or jump by this amount", default=None),
        ),
        duration=1.0,
        check=_one_jump,
        example=(("by", 5.0),),
    ),
    Kind(
        name="drift",
        mark="F",
        family="value",
        help="true value + rate x seconds since the fault began",
        params=(POINT, Param(name="rate", type="finite", unit="per s",
                             help="offset added per second since the fault began")),
        acts_on="numbers",
    ),
    Kind(
        name="offset",
        mark="A",
        family="value",
        help="true value + by (a calibration error)",
        params=(POINT, Param(name="by", type="finite", help="added to the true value")),
        acts_on="numbers",
    ),
    Kind(
        name="scale",
        mark="M",
        family="value",
        help="true value x factor (a calibration error)",
        params=(POINT, Param(name="factor", type="finite",
                             help="the true value is multiplied by it")),
        acts_on="numbers",
    ),
    Kind(
        name="out_of_range",
        mark="H",
        family="value",
        help="beyond the point's limits (by margin) or its type's range, high or low",
        params=(
            POINT,
            Param(name="side", type="text", help="high or low", choices=("high", "low"),
                  default="high", quiet_default=True),
            Param(name="beyond", type="text", help="limits (its low/high) or type",
                  choices=("limits", "type"), default="limits", quiet_default=True),
            Param(name="margin", type="finite", help="how far past the limits", default=None,
                  gt=0),
        ),
        check=_margin_for_limits,
        acts_on="numbers",
    ),
    Kind(
        name="nan",
        mark="N",
        family="value",
        help="a float point reads NaN, or inf / -inf",
        params=(POINT, Param(name="value", type="text", help="nan, inf or -inf",
                             choices=("nan", "inf", "-inf"), default="nan", wire_number=True)),
        acts_on="floats",
    ),
    Kind(
        name="flap",
        mark="W",
        family="value",
        help="a bool point toggles every period (a chattering contact)",
        params=(POINT, Param(name="period", type="seconds", help="toggles every period",
                             unit="s", default=1.0, gt=0, wire="period_s")),
        acts_on="bools",
    ),
)  # fmt: skip

KINDS: tuple[str, ...] = tuple(kind.name for kind in KIND_TABLE)
BY_NAME: Mapping[str, Kind] = {kind.name: kind for kind in KIND_TABLE}
# Kinds that take the whole server down rather than acting on requests.
SERVER_KINDS = frozenset(kind.name for kind in KIND_TABLE if kind.family == "server")
# Kinds that change what a point reads (farm.config.faults.value_rules), not how requests go.
VALUE_KINDS = frozenset(kind.name for kind in KIND_TABLE if kind.family == "value")


def param_names() -> tuple[str, ...]:
    """Every parameter name of every kind, once each, in the order kinds declare them."""
    return tuple(dict.fromkeys(p.name for kind in KIND_TABLE for p in kind.params))


def params_named(name: str) -> tuple[tuple[Kind, Param], ...]:
    """The kinds that take a parameter of that name, with their declaration of it."""
    return tuple((kind, p) for kind in KIND_TABLE for p in kind.params if p.name == name)


def log_text(kind: str, params: Mapping[str, Any], probability: float = 1.0) -> str:
    """How a fault reads in the farm's log: 'delay ms=300', 'stuck voltage value=0'.

    Parameters at their defaults are left out; a value kind names its point first.
    """
    declared = BY_NAME[kind]
    words = []
    for param in declared.params:
        value = params.get(param.name)
        if param is POINT or (param.default is not REQUIRED and value == param.default):
            continue
        words.append(
            f"{param.name}={value:g}" if isinstance(value, float) else f"{param.name}={value}"
        )
    shown = " ".join(words)
    if probability < 1:
        shown += f" probability={probability:g}"
    if declared.family == "value":
        shown = f"{params.get('point', '')} {shown}"
    return f"{kind} {shown}".rstrip()
