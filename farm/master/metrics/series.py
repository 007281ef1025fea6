"""The per-server label strings of /metrics, kept by server and place, not by position.

Part of the metrics exposition (farm.master.metrics.servers). A shard's label strings are built once
and again only when its `Shard` changes (servers joining or leaving), ordered by each
server's counters index (`ServerSpec.stats_index`, farm.ipc.stats), so that a label and the
counters it is printed with always belong to the same server.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from farm.config.plan import Shard
from farm.ipc.stats import HEADER_SLOTS, SERVER_SLOTS, ShardCounters

PREFIX = "modbus_farm_"


def escape(value: str) -> str:
    """A label value as the text format wants it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def header(name: str, kind: str, text: str) -> str:
    """A metric family's HELP and TYPE lines, text format."""
    return f"# HELP {name} {text}\n# TYPE {name} {kind}\n"


def openmetrics_header(name: str, kind: str, text: str) -> str:
    """A metric family's HELP and TYPE lines, OpenMetrics: a counter's family is named
    without its samples' `_total`, and HELP escapes quotes too."""
    if kind == "counter":
        name = name.removesuffix("_total")
    text = text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return f"# HELP {name} {text}\n# TYPE {name} {kind}\n"


def _labels(worker: int, servers: Iterable[str]) -> list[str]:
    """The label string of each of a shard's servers, in the order given."""
    return [f'server="{escape(name)}",worker="{worker}"' for name in servers]


@dataclass(frozen=True, slots=True)
class ShardSeries:
    """A shard's per-server label strings, in the order of their counters."""

    shard: Shard  # what they were built for: a slot whose shard changed needs new ones
    labels: list[str]
    # The counters indexes in use, in order; None when they are simply 0 .. len(labels) - 1.
    indexes: list[int] | None
    info: list[str]  # each server's server_info sample, in the order of `shard.servers`

    @classmethod
    def of(cls, shard: Shard) -> ShardSeries:
        ordered = sorted(shard.servers, key=lambda spec: spec.stats_index)
        indexes = [spec.stats_index for spec in ordered]
        contiguous = indexes == list(range(len(indexes)))
        labels = _labels(shard.worker, (spec.name for spec in ordered))
        info = [
            f'{PREFIX}server_info{{server="{escape(spec.name)}",worker="{shard.worker}",'
            f'fleet="{escape(spec.fleet)}",template="{escape(spec.template)}",'
            f'transport="{spec.transport}"}} 1\n'
            for spec in shard.servers
        ]
        return cls(shard, labels, None if contiguous else indexes, info)

    def values(self, counters: ShardCounters) -> list[int]:
        """The shard's counters with the servers' slots only, one after the other in the
        order of `labels` (free counters indexes left out), after the header."""
        if self.indexes is None:
            return counters.snapshot(len(self.labels))
        every = counters.snapshot()
        packed = every[:HEADER_SLOTS]
        for index in self.indexes:
            start = ShardCounters.offset(index)
            packed.extend(every[start : start + SERVER_SLOTS])
        return packed
