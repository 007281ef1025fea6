"""One entry of the fault table, and how it reads: in the API and in the log.

Used by farm.master.faults.table, which creates and changes entries (see its docstring for a
fault's life), by farm.master.faults.effects, which applies them, and by
farm.master.http.faults, which shows them (`Fault.view`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from farm.config.faults.kinds import BY_NAME, log_text
from farm.config.faults.spec import FaultRule, FaultSpec

log = logging.getLogger("farm")
SHOWN_NAMES = 3  # servers named in a log line before the rest is counted


@dataclass(eq=False, kw_only=True)
class Fault:
    """One fault in the table; times are on the master's monotonic clock."""

    id: int
    spec: FaultSpec
    servers: tuple[str, ...]
    rule: FaultRule
    placement: dict[int, tuple[int, ...]]  # worker -> shard positions of its servers
    start: float
    end: float | None
    state: str = "scheduled"  # scheduled | active | expired | cleared
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    held: dict[str, bytes] = field(default_factory=dict)  # stuck: each server's point then
    rules: dict[int, FaultRule] = field(default_factory=dict)  # per worker, with `held`

    def view(self, now: float) -> dict[str, Any]:
        """The fault as the API shows it (farm.master.http.faults.FaultView)."""
        return {
            "id": self.id,
            "kind": self.spec.kind,
            "state": self.state,
            "servers": list(self.servers),
            "starts_in_s": round(max(0.0, self.start - now), 3),
            "ends_in_s": None if self.end is None else round(max(0.0, self.end - now), 3),
            "spec": self.spec.model_dump(mode="json"),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class EndedFault:
    """A fault that was active and ended (expired or cleared); master's monotonic clock."""

    id: int
    kind: str
    servers: tuple[str, ...]
    began: float
    ended: float

    @classmethod
    def of(cls, fault: Fault, ended: float) -> EndedFault:
        return cls(
            id=fault.id,
            kind=fault.spec.kind,
            servers=fault.servers,
            began=fault.start,
            ended=ended,
        )


def kind_text(fault: Fault) -> str:
    """The fault's kind and parameters, as its log lines say them (the registry's words)."""
    spec = fault.spec
    params = {param.name: getattr(spec, param.name) for param in BY_NAME[spec.kind].params}
    return log_text(spec.kind, params, getattr(spec, "probability", 1.0))


def servers_text(fault: Fault) -> str:
    """The servers a fault targets, as its log lines count and name them."""
    names = ", ".join(fault.servers[:SHOWN_NAMES])
    more = len(fault.servers) - SHOWN_NAMES
    if more > 0:
        return f"{len(fault.servers)} servers ({names} and {more} more)"
    return f"{len(fault.servers)} server{'s' if len(fault.servers) > 1 else ''} ({names})"


ENDED_SHOWN = 20  # faults ending together that are logged one line each
SHOWN_RUNS = 5  # runs of ids a batch's line names


def log_ended(ended: list[tuple[Fault, str]]) -> None:
    """Faults that ended in one loop iteration ("cleared", "expired"): one line each, or,
    past ENDED_SHOWN (a clear of thousands, thousands expiring together), one line for all
    that ended the same way: thousands of lines would cost the master more than the change."""
    if len(ended) <= ENDED_SHOWN:
        for fault, how in ended:
            log.info("fault %d %s: %s on %s", fault.id, how, kind_text(fault), servers_text(fault))
        return
    for how in sorted({how for _, how in ended}):
        faults = [fault for fault, each in ended if each == how]
        first = faults[0]
        ids = ids_text([fault.id for fault in faults])
        what, on = kind_text(first), servers_text(first)
        log.info("%d faults %s (ids %s): the first %s on %s", len(faults), how, ids, what, on)


def ids_text(ids: list[int]) -> str:
    """Fault ids as a log line names many of them: '1-3, 7, 9-12'."""
    runs: list[list[int]] = []
    for each in sorted(ids):
        if runs and each == runs[-1][1] + 1:
            runs[-1][1] = each
        else:
            runs.append([each, each])
    shown = [str(a) if a == b else f"{a}-{b}" for a, b in runs[:SHOWN_RUNS]]
    more = f" and {len(runs) - SHOWN_RUNS} more runs" if len(runs) > SHOWN_RUNS else ""
    return ", ".join(shown) + more
