"""Scenarios: a timeline of faults, values, stops, starts and scaling, as a test tells a story.

Pure data (farm.config). A scenario is a config file's `scenario:` section, or a file of its
own with only that section, or the body of POST /api/v1/scenario:

    scenario:
      seed: 7                     # fractions without their own seed use it
      repeat: 1                   # or N, or forever: the timeline plays again from its end
      duration: 10s               # optional: one play's length (default: the last step's end)
      steps:
        - {at: 1s, for: 2s, fault: {kind: offline, fleet: meters, fraction: 0.1}}
        - {name: sticky, at: 2s, for: 5s,
           fault: {kind: stuck, target: meter-0003, point: voltage_l1}}
        - {after: 1s, from: sticky, set: {target: meter-0005, point: setpoint, value: 42}}
        - {at: 9s, stop: {fleet: meters, fraction: 0.5}, for: 1s}
        - {at: 9s, scale: {fleet: meters, count: 30}}

A step starts `at` a time from the scenario's start, or `after` a time from the end of the
step named in `from` (default: the step before it); `for` is how long it lasts (a fault's
duration; a stopped server starts again then). It does one thing: `fault` (the words of
`farm fault add`: kind, its parameters, target, fleet, glob, fraction, seed), `set` (a point
of the targeted servers to a value), `stop` or `start` (servers), `scale` (a fleet to a
count). `compile_scenario` checks the shape and the order and returns the `Timeline`;
farm.config.scenario.check checks it against a farm (fleets, servers, points, capacity).
Every mistake is one ConfigError naming where it is (`scenario.steps[2].fault.ms`) and
what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from farm.config.faults.selection import Seconds, Strict, Target
from farm.config.faults.spec import FaultSpec, FaultSpecError, parse_fault
from farm.config.problems import describe
from farm.config.schema import read
from farm.errors import ConfigError

ACTIONS = ("fault", "set", "stop", "start", "scale")
_TARGET_WORDS = ("target", "fleet", "glob", "fraction", "seed")


class _Words(Strict):
    """Which servers, in the words of `farm fault add`."""

    target: str | list[str] | None = None
    fleet: str | None = None
    glob: str | None = None
    fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    seed: int | None = None

    def as_target(self, seed: int) -> Target:
        names = [self.target] if isinstance(self.target, str) else list(self.target or ())
        return Target(
            servers=tuple(names),
            fleet=self.fleet,
            glob=self.glob,
            fraction=self.fraction,
            seed=seed if self.seed is None else self.seed,
        )

    @model_validator(mode="after")
    def _something(self) -> _Words:
        if not (self.target or self.fleet or self.glob or self.fraction):
            raise ValueError("say which servers: target, fleet, glob or fraction")
        return self


class SetModel(_Words):
    point: str = Field(min_length=1)
    value: float | str


class ScaleModel(Strict):
    fleet: str = Field(min_length=1)
    count: int


class StepModel(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str | None = None
    at: Seconds | None = Field(None, ge=0)
    after: Seconds | None = Field(None, ge=0)
    from_: str | None = Field(None, alias="from")
    for_: Seconds | None = Field(None, alias="for", gt=0)
    fault: dict[str, Any] | None = None
    set: SetModel | None = None
    stop: _Words | None = None
    start: _Words | None = None
    scale: ScaleModel | None = None

    @model_validator(mode="after")
    def _one_thing(self) -> StepModel:
        given = [action for action in ACTIONS if getattr(self, action) is not None]
        if len(given) != 1:
            found = ", ".join(given) or "none"
            raise ValueError(f"a step does one thing: {', '.join(ACTIONS)} (found {found})")
        if self.at is not None and (self.after is not None or self.from_ is not None):
            raise ValueError("give at (from the start) or after (from a step's end), not both")
        if self.from_ is not None and self.after is None:
            raise ValueError("from names the step that after counts from; give after too")
        return self


class ScenarioModel(Strict):
    seed: int = 0
    repeat: int | Literal["forever"] = Field(1)
    duration: Seconds | None = Field(None, gt=0)
    steps: list[StepModel] = Field(min_length=1)

    @model_validator(mode="after")
    def _repeat(self) -> ScenarioModel:
        if isinstance(self.repeat, int) and self.repeat < 1:
            raise ValueError("repeat: at least 1 (or forever)")
        return self


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One step of a compiled timeline; times in seconds from the scenario's start."""

    index: int
    where: str  # scenario.steps[i], for messages
    name: str
    action: str  # fault | set | stop | start | scale
    at: float
    duration: float | None
    fault: FaultSpec | None = None
    target: Target | None = None
    point: str = ""
    value: float | str | None = None
    fleet: str = ""
    count: int = 0

    @property
    def end(self) -> float:
        return self.at + (self.duration or 0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeline:
    """A scenario ready to play: steps in order, one play's length, how many plays."""

    seed: int
    repeat: int | None  # None: forever
    length: float
    steps: tuple[Step, ...]


def load_scenario(path: str | Path) -> Timeline | None:
    """The scenario of a file (its `scenario:` section), or None if it has none."""
    source = Path(path)
    data = read(source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with a scenario section at the top")
    if "scenario" not in data:
        return None
    return compile_scenario(data["scenario"], str(source))


def compile_scenario(data: Any, source: str = "scenario") -> Timeline:
    """A checked timeline from a scenario section; raises ConfigError naming the step.

    `source` starts each message (the file's name, or 'scenario' for the API's body).
    """
    prefix = f"{source}: " if source != "scenario" else ""
    try:
        model = ScenarioModel.model_validate(data)
    except ValidationError as error:
        line = describe(error, Path("scenario"), ScenarioModel).removeprefix("scenario: ")
        line = line.removeprefix("(top level): ")
        raise ConfigError(f"{prefix}scenario.{line}") from None
    steps: list[Step] = []
    names: dict[str, Step] = {}
    for index, each in enumerate(model.steps):
        where = f"scenario.steps[{index}]"
        at = _when(each, steps, names, where, prefix)
        step = _step(each, index, where, at, model.seed, prefix)
        if steps and step.at < steps[-1].at:
            raise ConfigError(
                f"{prefix}{where}.at: starts at {step.at:g} s, before the step above it, "
                f"steps[{index - 1}] "
                f"({steps[-1].at:g} s); list the steps in the order they happen"
            )
        if step.name in names:
            raise ConfigError(f"{prefix}{where}.name: {step.name!r} names another step too")
        names[step.name] = step
        steps.append(step)
    length = max(step.end for step in steps)
    if model.duration is not None:
        for step in steps:
            if step.end > model.duration:
                raise ConfigError(
                    f"{prefix}{step.where}: ends at {step.end:g} s, past the scenario's "
                    f"duration ({model.duration:g} s); lengthen duration or end the step sooner"
                )
        length = model.duration
    repeat = None if model.repeat == "forever" else model.repeat
    if repeat != 1 and length <= 0:
        raise ConfigError(
            f"{prefix}scenario.repeat: a scenario of no length cannot repeat; "
            "give duration (one play's length) or steps that last"
        )
    return Timeline(seed=model.seed, repeat=repeat, length=length, steps=tuple(steps))


def _when(
    model: StepModel, steps: list[Step], names: dict[str, Step], where: str, prefix: str
) -> float:
    if model.after is None:
        return model.at or 0.0
    if model.from_ is None:
        if not steps:
            raise ConfigError(
                f"{prefix}{where}.after: the first step has no step before it; use at"
            )
        return steps[-1].end + model.after
    earlier = names.get(model.from_)
    if earlier is None:
        raise ConfigError(
            f"{prefix}{where}.from: no earlier step named {model.from_!r}; "
            "name the step (name: ...) and list it before this one"
        )
    return earlier.end + model.after


def _step(model: StepModel, index: int, where: str, at: float, seed: int, prefix: str) -> Step:
    common: dict[str, Any] = {"index": index, "where": where, "at": at, "duration": model.for_}
    if model.fault is not None:
        fault = _fault(model.fault, model.for_, seed, where, prefix)
        name = model.name or f"{fault.kind}{_point_of(fault)} on {fault.target.words()}"
        return Step(name=name, action="fault", fault=fault, target=fault.target, **common)
    if model.set is not None:
        target = model.set.as_target(seed)
        value = model.set.value
        shown = f"{value:g}" if isinstance(value, float) else value
        name = model.name or f"set {model.set.point}={shown} on {target.words()}"
        return Step(
            name=name, action="set", target=target, point=model.set.point, value=value, **common
        )
    if model.scale is not None:
        name = model.name or f"scale {model.scale.fleet} to {model.scale.count}"
        if model.scale.count < 0:
            raise ConfigError(
                f"{prefix}{where}.scale.count: {model.scale.count} is below 0; "
                "a fleet scales to 0 servers at least"
            )
        if model.for_ is not None:
            raise ConfigError(f"{prefix}{where}.for: a scale step has no end; remove for")
        return Step(
            name=name,
            action="scale",
            fleet=model.scale.fleet,
            count=model.scale.count,
            **common,
        )
    action = "stop" if model.stop is not None else "start"
    words = model.stop or model.start
    assert words is not None  # StepModel checked that the step does one thing
    target = words.as_target(seed)
    name = model.name or f"{action} {target.words()}"
    return Step(name=name, action=action, target=target, **common)


def _fault(
    data: dict[str, Any], duration: float | None, seed: int, where: str, prefix: str
) -> FaultSpec:
    """A step's fault in `farm fault add`'s words, as the API's FaultSpec."""
    body = {key: value for key, value in data.items() if key not in _TARGET_WORDS}
    try:
        words = _Words.model_validate({key: data[key] for key in _TARGET_WORDS if key in data})
    except ValidationError as error:
        message = error.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{prefix}{where}.fault: {message}") from None
    body["target"] = words.as_target(seed).model_dump()
    if duration is not None:
        if "duration" in body:
            raise ConfigError(f"{prefix}{where}.fault.duration: the step's for says it; remove it")
        body["duration"] = duration
    try:
        return parse_fault(body)
    except FaultSpecError as error:
        raise ConfigError(f"{prefix}{where}.fault.{error}") from None


def _point_of(fault: FaultSpec) -> str:
    point = getattr(fault, "point", None)
    return f" {point}" if point else ""
