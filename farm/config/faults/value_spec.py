"""Value faults: a point that reads wrong while the device answers fine. Pure data.

The request-side models of the value kinds, validated at the boundary like the other
faults (farm.config.faults.spec joins them into `FaultSpec`). A value fault names a point of the
targeted servers' template; every reader sees its effect (a Modbus client on any path, and
the control API), while the register bank keeps the true value, so the point resumes
exactly where it would be when the fault ends. What each kind does to a reading is
farm.config.faults.value_rules.

    stuck         the point reads `value`, or, without one, what it read when the fault began
    spike         it reads `value`, or its true value + `by`, for the fault's duration
                  (1 s unless `duration` says otherwise), then resumes
    drift         true value + `rate` x seconds since the fault began
    offset        true value + `by` (a calibration error)
    scale         true value x `factor` (a calibration error)
    out_of_range  beyond the point's limits (its behaviour's low/high, by `margin`: a tenth
                  of the span unless given) or its type's range (`beyond: type`: an int16
                  reads 32767 or -32768, a float the largest finite one), on `side` high or low
    nan           a float point reads NaN, or `value` inf / -inf
    flap          a bool point toggles every `period` (a chattering contact)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, FiniteFloat, model_validator

from farm.config.faults.selection import Seconds, Strict, Target


class _ValueFault(Strict):
    """What every value fault has: servers, a point by name, when and for how long."""

    target: Target
    point: str = Field(min_length=1, description="The point's name in the servers' template")
    start_in: Seconds = Field(0.0, ge=0)
    duration: Seconds | None = Field(None, gt=0)


class StuckFault(_ValueFault):
    kind: Literal["stuck"]
    value: FiniteFloat | None = Field(None, description="Stuck at this (default: its value then)")


class SpikeFault(_ValueFault):
    kind: Literal["spike"]
    value: FiniteFloat | None = Field(None, description="Jump to this value")
    by: FiniteFloat | None = Field(None, description="Or jump by this amount")
    duration: Seconds = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _one_jump(self) -> SpikeFault:
        if (self.value is None) == (self.by is None):
            raise ValueError("value: give value (jump to) or by (jump by), one of them")
        return self


class DriftFault(_ValueFault):
    kind: Literal["drift"]
    rate: FiniteFloat = Field(description="Offset added per second since the fault began")


class OffsetFault(_ValueFault):
    kind: Literal["offset"]
    by: FiniteFloat = Field(description="Added to the true value")


class ScaleFault(_ValueFault):
    kind: Literal["scale"]
    factor: FiniteFloat = Field(description="The true value is multiplied by it")


class OutOfRangeFault(_ValueFault):
    kind: Literal["out_of_range"]
    side: Literal["high", "low"] = "high"
    beyond: Literal["limits", "type"] = "limits"
    margin: FiniteFloat | None = Field(None, gt=0, description="How far past the limits")

    @model_validator(mode="after")
    def _margin_for_limits(self) -> OutOfRangeFault:
        if self.beyond == "type" and self.margin is not None:
            raise ValueError("margin: applies to beyond limits only; remove it")
        return self


class NanFault(_ValueFault):
    kind: Literal["nan"]
    value: Literal["nan", "inf", "-inf"] = "nan"


class FlapFault(_ValueFault):
    kind: Literal["flap"]
    period: Seconds = Field(1.0, gt=0, description="It toggles every period")


ValueFault = (
    StuckFault
    | SpikeFault
    | DriftFault
    | OffsetFault
    | ScaleFault
    | OutOfRangeFault
    | NanFault
    | FlapFault
)
VALUE_FAULTS = (
    StuckFault,
    SpikeFault,
    DriftFault,
    OffsetFault,
    ScaleFault,
    OutOfRangeFault,
    NanFault,
    FlapFault,
)


def value_params(spec: Any) -> dict[str, Any]:
    """The FaultRule fields of a value fault (farm.config.faults.rules)."""
    params: dict[str, Any] = {"point": spec.point}
    if isinstance(spec, NanFault):
        params["value"] = float(spec.value)
    elif isinstance(spec, StuckFault | SpikeFault):
        params["value"] = spec.value
    if isinstance(spec, SpikeFault | OffsetFault) and spec.by is not None:
        params["by"] = spec.by
    if isinstance(spec, DriftFault):
        params["rate"] = spec.rate
    if isinstance(spec, ScaleFault):
        params["factor"] = spec.factor
    if isinstance(spec, OutOfRangeFault):
        params.update(side=spec.side, beyond=spec.beyond, margin=spec.margin)
    if isinstance(spec, FlapFault):
        params["period_s"] = spec.period
    return params
