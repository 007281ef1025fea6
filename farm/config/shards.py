"""Shards: one fleet served by N farms side by side, each taking a stable slice of it.

Part of the plan stage (config -> fleets -> plan): every farm expands the whole fleet the
same way (same file, same `--count`), then keeps only its slice, so a server's index, name,
seed, address and live values are the same whichever farm serves it, and dashboards can
add the shards up. Farm `index` of `count` takes the servers whose index i satisfies
`index * total // count <= i < (index + 1) * total // count`: contiguous (each shard is a
run of names and ports, which reads well in a SCADA's device list and in a Kubernetes
Service), balanced to within one server, disjoint, and together exactly the fleet.

A word on words: a *shard* here is a farm's part of the fleet (one pod of a StatefulSet);
`farm.config.plan.Shard` is a worker's part of one farm.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from farm.errors import ConfigError

_POD_INDEX = re.compile(r"-([0-9]+)$")


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetSlice:
    """The servers one shard serves: fleet indices start..stop-1 of total."""

    index: int
    count: int
    start: int
    stop: int
    total: int

    @property
    def servers(self) -> int:
        return self.stop - self.start

    @property
    def whole(self) -> bool:
        return self.count == 1

    def as_json(self) -> dict[str, int]:
        """As the API reports it: shard `index` of `count`, fleet servers start..stop-1."""
        return {
            "index": self.index,
            "count": self.count,
            "start": self.start,
            "stop": self.stop,
            "fleet_total": self.total,
        }


def whole_fleet(total: int) -> FleetSlice:
    return FleetSlice(index=0, count=1, start=0, stop=total, total=total)


def fleet_slice(total: int, index: int, count: int) -> FleetSlice:
    """Shard `index` of `count` over a fleet of `total` servers; ConfigError if it is empty."""
    if count < 1:
        raise ConfigError(f"the shard count must be at least 1, got {count}")
    if not 0 <= index < count:
        raise ConfigError(f"shard index {index} is outside 0..{count - 1} (shard count {count})")
    start, stop = index * total // count, (index + 1) * total // count
    if start == stop:
        raise ConfigError(
            f"shard {index} of {count} holds no servers: the fleet has only {total}; "
            "use fewer shards"
        )
    return FleetSlice(index=index, count=count, start=start, stop=stop, total=total)


def fleet_slices(total: int, count: int) -> list[FleetSlice]:
    """Every shard's slice, in order."""
    return [fleet_slice(total, index, count) for index in range(count)]


def index_from_hostname(hostname: str) -> int:
    """A StatefulSet pod's ordinal: `modbus-farm-7` -> 7."""
    match = _POD_INDEX.search(hostname)
    if match is None:
        raise ConfigError(
            f"host name {hostname!r} does not end in -N (a StatefulSet pod's ordinal), "
            "so it gives no shard index"
        )
    return int(match[1])
