"""One request a client repeats on one server (unit, FC, address, count): its intervals, as
farm.worker.observe.clients folds them in once a second.

A fold is one dict lookup (the client's `state`) and this object's `fold`: the intervals
in C (`map(sub)`), the last WINDOW kept, the largest, the outages, and the decreasing
largest intervals `farm report` takes a window's max from. The median and 99th percentile
(`usual`, `tail`) are sorted again only once RESORT new intervals came (a sort of WINDOW
integers each fold was most of a fold's cost, and a fold was most of what a poller polled
once a second cost the worker); a summary sorts its own, fresh.
"""

from __future__ import annotations

from collections import deque
from operator import sub

WINDOW = 64  # intervals the percentiles look at
RESORT = 16  # new intervals after which `usual` and `tail` are sorted again
OUTAGE_FACTOR = 3  # a gap this many times the usual interval is an outage
MIN_OUTAGE_NS = 500_000_000  # and at least this long
OUTAGES = 8  # kept per request
GAPS_KEPT = 16  # a request's decreasing largest intervals (PollSummary.gaps), newest kept


class Poll:
    """The intervals of one request of one client; times are perf_counter ns."""

    __slots__ = (
        "began",
        "folded",
        "fresh",
        "gaps",
        "max_gap",
        "outages",
        "tail",
        "usual",
        "window",
    )

    def __init__(self, began: int) -> None:
        self.began = began  # its first arrival
        self.folded = 0  # arrivals folded away
        self.window: list[int] = []  # the last WINDOW intervals
        self.fresh = 0  # intervals since `usual` and `tail` were sorted
        self.usual = 0  # the median interval as last sorted (0: not yet)
        self.tail = 0  # the 99th percentile as last sorted
        self.max_gap = 0  # the largest interval ever
        self.outages: deque[tuple[int, int]] | None = None  # (the poll before, the gap)
        # When each kept interval ended and the interval, flat (no tuple a fold: less for the
        # garbage collector): each smaller than the one before it, so the first that ended
        # in a window is the window's largest (PollSummary.gaps).
        self.gaps: list[int] = []

    def fold(self, times: list[int]) -> None:
        """Turn all but the last arrival into intervals."""
        gaps = list(map(sub, times[1:], times))
        self.window = (self.window + gaps)[-WINDOW:]
        self.fresh += len(gaps)
        usual = self.usual  # the outages are measured against the interval before these
        if not usual or self.fresh >= RESORT:
            self.sort()
            usual = usual or self.usual
        largest = max(gaps)
        if largest > OUTAGE_FACTOR * usual and largest > MIN_OUTAGE_NS:
            if self.outages is None:
                self.outages = deque(maxlen=OUTAGES)
            for earlier, gap in zip(times, gaps, strict=False):
                if gap > OUTAGE_FACTOR * usual and gap > MIN_OUTAGE_NS:
                    self.outages.append((earlier, gap))
        # Two pushes a fold, not one an interval: an interval between the fold's largest and
        # its last, and smaller than the last, is not kept, so a window that begins between
        # those two (a fold spans a few seconds at most) may miss its own largest.
        at = gaps.index(largest)
        push_gap(self.gaps, times[at + 1], largest)
        if at + 1 < len(gaps):
            push_gap(self.gaps, times[-1], gaps[-1])
        if largest > self.max_gap:
            self.max_gap = largest
        self.folded += len(gaps)
        del times[:-1]

    def sort(self) -> None:
        ordered = sorted(self.window)
        self.usual = ordered[len(ordered) // 2]
        self.tail = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        self.fresh = 0


def push_gap(kept: list[int], ended: int, gap: int) -> None:
    """Add an interval to decreasing largest ones (Poll.gaps): the older ones not larger go."""
    while kept and kept[-1] <= gap:
        del kept[-2:]
    kept += (ended, gap)
    if len(kept) > 2 * GAPS_KEPT:
        del kept[:2]
