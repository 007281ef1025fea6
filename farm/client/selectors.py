"""What a fault's target can be, and a fault as the farm answers it: the client's side of
faults (farm.client re-exports both; the API's own model is farm.config.faults.spec).

    from farm.client import FarmClient, Fleet, Fraction, Glob
    client.fault("delay", target=Fleet("meters"), ms=800, duration="30s")
    client.fault("exception", target=Fraction(0.1, seed=7, of=Glob("plc-*")), code=6)

A target is a server name, a list of names, `Servers(...)`, `Fleet(name)`, `Glob(pattern)`,
`Fraction(0.1, seed=7)` of the farm or of another target's servers (the same seed picks the
same servers), or the API's JSON for one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from farm.errors import FarmError


@dataclass(frozen=True, slots=True)
class Servers:
    """Servers by name."""

    names: tuple[str, ...]

    def __init__(self, *names: str) -> None:
        object.__setattr__(self, "names", names)

    def target(self) -> dict[str, Any]:
        return {"servers": list(self.names)}


@dataclass(frozen=True, slots=True)
class Fleet:
    """Every server of a fleet."""

    name: str

    def target(self) -> dict[str, Any]:
        return {"fleet": self.name}


@dataclass(frozen=True, slots=True)
class Glob:
    """Every server whose name matches a glob ('plc-*')."""

    pattern: str

    def target(self) -> dict[str, Any]:
        return {"glob": self.pattern}


@dataclass(frozen=True, slots=True)
class Fraction:
    """A seeded random fraction of the farm, or of another target's servers."""

    fraction: float
    seed: int = 0
    of: Servers | Fleet | Glob | None = None

    def target(self) -> dict[str, Any]:
        within = self.of.target() if self.of is not None else {}
        return {**within, "fraction": self.fraction, "seed": self.seed}


Target = str | Sequence[str] | Servers | Fleet | Glob | Fraction | Mapping[str, Any]


def target_body(target: Target) -> dict[str, Any]:
    """The API's JSON for a target."""
    if isinstance(target, str):
        return {"servers": [target]}
    if isinstance(target, Servers | Fleet | Glob | Fraction):
        return target.target()
    if isinstance(target, Mapping):
        return dict(target)
    return {"servers": list(target)}


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultInfo:
    """A fault as the farm holds it."""

    id: int
    kind: str
    state: str  # scheduled | active (then expired or cleared)
    servers: tuple[str, ...]
    starts_in_s: float
    ends_in_s: float | None  # None: until cleared
    spec: dict[str, Any] = field(default_factory=dict)  # the fault as asked, defaults filled

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultInfo:
        try:
            return cls(
                id=int(data["id"]),
                kind=str(data["kind"]),
                state=str(data["state"]),
                servers=tuple(data["servers"]),
                starts_in_s=float(data["starts_in_s"]),
                ends_in_s=None if data["ends_in_s"] is None else float(data["ends_in_s"]),
                spec=dict(data["spec"]),
            )
        except (TypeError, KeyError, ValueError) as exc:
            raise FarmError(f"the farm answered something that is not a fault ({exc})") from exc
