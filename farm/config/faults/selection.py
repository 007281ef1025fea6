"""Which servers an action is for, and how long: the words faults and scenarios share.

Pure data (farm.config). A `Target` is what `farm fault add --target/--fleet/--glob/
--fraction/--seed` says, the API's `target` object, and a scenario step's target words;
`select` resolves it against (name, fleet) pairs. `Seconds` reads durations written as
500ms, 30s, 5m, 1h or a plain number of seconds.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from 500ms, 30s, 5m, 1h or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"a duration is a number of seconds or text like 500ms, 30s, 5m: {value}")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a duration; write it like 500ms, 30s or 5m")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


Seconds = Annotated[float, BeforeValidator(parse_duration)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(Strict):
    """Which servers: the ones matching every filter given, or a seeded fraction of them.

    No filter but `fraction` picks from the whole farm. The same seed and selection always
    pick the same servers.
    """

    servers: tuple[str, ...] = ()
    fleet: str | None = None
    glob: Annotated[str, Field(min_length=1)] | None = None
    fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _something(self) -> Target:
        if not (self.servers or self.fleet or self.glob or self.fraction):
            raise ValueError("give servers (names), fleet, glob or fraction")
        return self

    def words(self) -> str:
        """The target as a person says it: 'meter-0003', '10% of meters', 'plc-*'."""
        what = ", ".join(self.servers) or self.glob or self.fleet or "the farm"
        if self.servers and (self.glob or self.fleet):
            what = f"{what} in {self.fleet or self.glob}"
        if self.fraction is not None:
            return f"{self.fraction * 100:g}% of {what}"
        return what


def select(target: Target, servers: Iterable[tuple[str, str]]) -> list[str]:
    """The names of the servers `target` picks from (name, fleet) pairs, sorted."""
    chosen = sorted(
        name
        for name, fleet in servers
        if (not target.servers or name in target.servers)
        and (target.fleet is None or fleet == target.fleet)
        and (target.glob is None or fnmatch.fnmatchcase(name, target.glob))
    )
    if target.fraction is None:
        return chosen
    return pick_fraction(chosen, target.fraction, target.seed)


def pick_fraction(names: list[str], fraction: float, seed: int) -> list[str]:
    """round(fraction * len(names)) of `names` (at least one), the same ones for a seed.

    Each name draws a rank from a hash of (seed, name), so the pick of a server does not
    depend on the order of the list, and a server added to a fleet does not reshuffle the
    others.
    """
    if not names:
        return []
    count = max(1, round(fraction * len(names)))

    def rank(name: str) -> bytes:
        return hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()

    return sorted(sorted(names, key=rank)[:count])
