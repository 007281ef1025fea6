"""A scenario checked against a farm: the fleets, servers and points its steps name exist
when each step runs, values fit their points, and scaling stays inside each fleet's
address range. Pure (farm.config).

`farm validate FILE` and `farm up FILE` check a file's scenario against the fleets the file
describes before anything binds; the master checks one posted to it against the farm as it
runs now (farm.master.scenario.player). The steps are walked in order, following every scale step,
so a step may name a server that an earlier step added. The first mistake is one
ConfigError naming the step, the field and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from farm.config import codec
from farm.config.faults.rules import VALUE_KINDS
from farm.config.faults.selection import select
from farm.config.faults.value_rules import unfit
from farm.config.growth import FleetSpec
from farm.config.scenario.model import Step, Timeline
from farm.config.templates import DeviceTemplate, Point
from farm.errors import ConfigError


def check_scenario(
    timeline: Timeline,
    fleets: Sequence[FleetSpec],
    templates: Mapping[str, DeviceTemplate],
    counts: Mapping[str, int] | None = None,
    source: str = "",
) -> None:
    """Raise ConfigError for the first step the farm cannot play; `counts`: each fleet's
    count now (default: at start); `source` starts the message (a file's name)."""
    prefix = f"{source}: " if source else ""
    by_name = {fleet.name: fleet for fleet in fleets}
    now = {fleet.name: (counts or {}).get(fleet.name, fleet.count) for fleet in fleets}
    for step in timeline.steps:
        field = f"{prefix}{step.where}.{step.action}"
        if step.action == "scale":
            _check_scale(step, by_name, field)
            now[step.fleet] = step.count
            continue
        assert step.target is not None
        if step.target.fleet is not None and step.target.fleet not in by_name:
            raise ConfigError(
                f"{field}.fleet: no fleet {step.target.fleet!r}; fleets: {', '.join(by_name)}"
            )
        servers = {name: fleet for fleet in fleets for name in fleet.names(now[fleet.name])}
        missing = [name for name in step.target.servers if name not in servers]
        if missing:
            raise ConfigError(
                f"{field}.target: no server {missing[0]!r} when this step runs "
                f"(at {step.at:g} s); `farm plan --servers` lists the names"
            )
        chosen = select(step.target, ((name, fleet.name) for name, fleet in servers.items()))
        if not chosen:
            raise ConfigError(f"{field}: its target matches no server when this step runs")
        point = step.point or getattr(step.fault, "point", "")
        if point:
            kind = step.fault.kind if step.fault is not None else "set"
            used = {templates[servers[name].template].name for name in chosen}
            for template in used:
                _check_point(templates[template], point, kind, step, field)


def _check_scale(step: Step, fleets: Mapping[str, FleetSpec], field: str) -> None:
    fleet = fleets.get(step.fleet)
    if fleet is None:
        raise ConfigError(f"{field}.fleet: no fleet {step.fleet!r}; fleets: {', '.join(fleets)}")
    if step.count > fleet.capacity:
        raise ConfigError(
            f"{field}.count: {step.count} is past the address range of fleet {fleet.name}, "
            f"which holds {fleet.capacity}; lower count or widen the fleet's addressing"
        )


def _check_point(template: DeviceTemplate, name: str, kind: str, step: Step, field: str) -> None:
    point: Point | None = next((p for p in template.points if p.name == name), None)
    where = f"{field}.point"
    if point is None:
        names = ", ".join(p.name for p in template.points) or "none"
        raise ConfigError(f"{where}: {template.name} has no point {name!r}; its points: {names}")
    if kind in VALUE_KINDS:
        reason = unfit(kind, point)
        if reason is not None:
            raise ConfigError(f"{where}: {reason}")
    if kind == "set":
        try:
            codec.encode_exact(point, codec.operator_value(point, step.value))
        except ValueError as error:
            raise ConfigError(f"{field}.value: {point.name} is {point.type}: {error}") from None
