"""What a fleet would cost, checked before it is built (`farm validate`, `plan`, `up`).

Part of the CLI, called by farm.cli.validate with each fleet's count and template as soon as
the config is read, before a single server is named or addressed: a count of ten million
is refused in milliseconds with the numbers, not after minutes and gigabytes of expansion.

Two limits:
- MAX_SERVERS servers in the whole fleet (every shard's part together), which is what
  `farm validate` expands to name and address every server.
- The memory of this machine (or of its cgroup, in a container): the servers this farm
  serves (its shard's part) at MEASURED_BYTES each, plus each one's register banks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from farm.config.plan import device_bytes
from farm.config.templates import DeviceTemplate
from farm.errors import ConfigError

MAX_SERVERS = 1_000_000
# RSS of master and workers per idle default server at 10,000 servers, measured by
# `python3 -m benchmarks.run` (benchmarks/README.md: 24.0 KiB), rounded up.
MEASURED_BYTES = 25 * 1024
CGROUP_LIMIT = Path("/sys/fs/cgroup/memory.max")
GiB = 1024**3


def check_fleet_size(
    fleets: Sequence[tuple[str, int, DeviceTemplate]], shards: int = 1, memory: int | None = None
) -> None:
    """Raise ConfigError (with the numbers) when the fleets, (name, count, template) each,
    are past MAX_SERVERS or would not fit in `memory` (default: this machine's)."""
    total = sum(count for _, count, _ in fleets)
    if total > MAX_SERVERS:
        biggest = max(fleets, key=lambda fleet: fleet[1])
        raise ConfigError(
            f"the fleets hold {total:,} servers ({biggest[0]}: {biggest[1]:,}), more than "
            f"the {MAX_SERVERS:,} a farm can plan; lower the counts"
        )
    memory = machine_memory() if memory is None else memory
    whole = sum(count * (MEASURED_BYTES + device_bytes(template)) for _, count, template in fleets)
    needed = math.ceil(whole / max(shards, 1))
    if needed > memory:
        per_shard = "" if shards == 1 else f" (one shard of {shards})"
        raise ConfigError(
            f"the fleets' {total:,} servers{per_shard} need about {needed / GiB:.1f} GiB "
            f"({MEASURED_BYTES // 1024} KiB each, measured, plus their register banks) but "
            f"this machine has {memory / GiB:.1f} GiB; lower the counts or split the fleet "
            "into shards (--shard-count)"
        )


def machine_memory() -> int:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit if lower."""
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = CGROUP_LIMIT.read_text().strip()  # "max" or a number: a kernel file, tiny
    except OSError:
        return int(physical)
    return int(min(physical, int(limit))) if limit.isdigit() else int(physical)
