"""Latency histograms for the load generator: cheap to record, exact to merge.

Not part of the farm's data flow: `farm bench` (farm.bench.command, farm.bench.loadgen) records one
latency per response, so recording must cost a few operations. Latencies are kept in whole
microseconds in log-linear buckets: 1 us wide below 2048 us, then 1024 buckets per power of
two, so any percentile is within 0.1 % of the true value. Histograms from several processes
merge by adding counts; the maximum is kept exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

SUB_BITS = 10
LINEAR_LIMIT = 2 << SUB_BITS  # 2048 us: below this a bucket is one microsecond


def bucket(us: int) -> int:
    """The bucket index of a latency in microseconds (inlined on the hot path)."""
    shift = us.bit_length() - SUB_BITS - 1
    return (shift << SUB_BITS) + (us >> shift) if shift > 0 else us


def bucket_value(index: int) -> float:
    """The middle of a bucket, in microseconds."""
    if index < LINEAR_LIMIT:
        return float(index)
    shift = (index >> SUB_BITS) - 1
    low = (index - (shift << SUB_BITS)) << shift
    return low + ((1 << shift) - 1) / 2


@dataclass(slots=True)
class Histogram:
    """Counts per bucket (sparse), and the largest latency seen."""

    counts: dict[int, int] = field(default_factory=dict)
    max_us: int = 0

    @classmethod
    def from_dense(cls, dense: list[int], max_us: int) -> Histogram:
        return cls({i: n for i, n in enumerate(dense) if n}, max_us)

    @classmethod
    def merged(cls, histograms: Iterable[Histogram]) -> Histogram:
        total = cls()
        for histogram in histograms:
            for index, count in histogram.counts.items():
                total.counts[index] = total.counts.get(index, 0) + count
            total.max_us = max(total.max_us, histogram.max_us)
        return total

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def percentile(self, fraction: float) -> float:
        """Latency in seconds below which `fraction` of the samples lie (0 if empty)."""
        total = self.total
        if not total:
            return 0.0
        rank = max(1, round(fraction * total))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return min(bucket_value(index), float(self.max_us)) / 1e6
        return self.max_us / 1e6
