"""What a value fault does to a reading: the arithmetic both readers share.

A value kind is its entry in farm.config.faults.kinds plus its branch of `reading` here.

Pure (farm.config, numpy through the codec, no pydantic): a worker applies it to the answers
of a faulted server (farm.worker.faults.values), the master to what the control API reads
(farm.master.faults.values). The register bank always holds the true value; a reading is
computed from it, the fault's rule and the time since the fault began, so the point
resumes exactly where it would be when the fault ends.

Bytes are as the bank holds a point: one byte (0 or 1) for a bit, two per register.
"""

from __future__ import annotations

import math

import numpy as np

from farm.config import codec
from farm.config.faults.kinds import BY_NAME, KIND_TABLE
from farm.config.faults.rules import FaultRule
from farm.config.templates import Point, PointType

_FLOATS = (PointType.FLOAT32, PointType.FLOAT64)
_TAKE_BOOLS = [
    kind.name
    for kind in KIND_TABLE
    if kind.family == "value" and kind.acts_on in ("numbers_and_bools", "bools")
]
_BOOL_KINDS = ", ".join(_TAKE_BOOLS[:-1]) + " and " + _TAKE_BOOLS[-1]  # "stuck, spike and flap"


def is_bool(point: Point) -> bool:
    return point.table.is_bits or point.type is PointType.BOOL


def unfit(kind: str, point: Point) -> str | None:
    """Why a value fault of `kind` cannot act on `point`, or None if it can (the points a
    kind acts on are its registry entry's `acts_on`)."""
    if point.type is PointType.STRING and not point.table.is_bits:
        return f"{point.name} is a string point; value faults act on numbers and bools"
    acts_on = BY_NAME[kind].acts_on
    if acts_on == "floats" and point.type not in _FLOATS:
        return f"{point.name} is {point.type}; {kind} needs a float32 or float64 point"
    if acts_on == "bools" and not is_bool(point):
        return f"{point.name} is {point.type}; {kind} needs a bool point (a coil, a discrete input)"
    if acts_on == "numbers" and is_bool(point):
        return f"{point.name} is a bool; {kind} needs a number ({_BOOL_KINDS} take bools)"
    return None


def reading(rule: FaultRule, point: Point, true: bytes, held: bytes | None, now: float) -> bytes:
    """The point's bytes as a reader sees them at monotonic time `now`."""
    kind = rule.kind
    if kind == "stuck":
        if rule.value is None:
            return true if held is None else held
        return codec.encode_one(point, rule.value)
    if kind == "nan":
        return codec.encode_one(point, float(rule.value if rule.value is not None else math.nan))
    if kind == "out_of_range":
        return codec.encode_one(point, _outside(rule, point))
    value = float(codec.decode_one(point, true))
    elapsed = max(0.0, now - rule.started)
    if kind == "flap":
        flipped = int(elapsed // rule.period_s) % 2 == 0 if rule.period_s > 0 else True
        return codec.encode_one(point, (1.0 - round(value)) if flipped else value)
    if kind == "spike":
        value = rule.value if rule.value is not None else value + rule.by
    elif kind == "drift":
        value += rule.rate * elapsed
    elif kind == "offset":
        value += rule.by
    elif kind == "scale":
        value *= rule.factor
    return codec.encode_one(point, value)


def _outside(rule: FaultRule, point: Point) -> float:
    """A value past the point's limits or its type's range, on the rule's side."""
    high = rule.side == "high"
    if rule.beyond == "type":
        if point.type in _FLOATS:
            single = point.type is PointType.FLOAT32
            # Just inside the largest finite value: scaling there and back must not round
            # past it to inf.
            largest = float(np.finfo(np.float32 if single else np.float64).max)
            largest *= (1 - 1e-6) if single else (1 - 1e-14)
            return (largest if high else -largest) * abs(point.scale)
        return math.inf if high else -math.inf  # the codec saturates at the type's range
    low_limit, high_limit = point.behaviour.low, point.behaviour.high
    margin = rule.margin if rule.margin is not None else (high_limit - low_limit) / 10 or 1.0
    return high_limit + margin if high else low_limit - margin


def bank_width(point: Point) -> int:
    """Bytes the point takes in its bank."""
    return 1 if point.table.is_bits else 2 * point.width


def overlap(point: Point, first: int, count: int) -> tuple[int, int] | None:
    """The addresses [start, end) that a read of `count` entries from `first` shares with
    the point, or None."""
    start = max(first, point.address)
    end = min(first + count, point.address + point.width)
    return (start, end) if start < end else None
