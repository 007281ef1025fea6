"""`farm report`: per client and fleet, what it polled and what it never polled, how often,
what it wrote; and for every fault that ended in the window, how each client behaved: its
connection attempts to the servers while they were offline (when the farm could count them:
farm.master.observe.attempts) and the time from the fault's end to its first poll of each
server again.

Built from what the workers said (farm.master.observe.gather) and the fault table's ended
faults, on the master's monotonic clock. Names are listed up to NAMES_SHOWN, then counted.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from farm.ipc.polling import PollSummary, ServerClients
from farm.master.faults.entry import EndedFault
from farm.master.observe.clients import WRITE_CODES

NAMES_SHOWN = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class Names:
    count: int
    names: tuple[str, ...]  # the first NAMES_SHOWN, in the farm's order


@dataclass(frozen=True, slots=True, kw_only=True)
class Intervals:
    usual_s: float  # the interval it keeps most of the time (median of its polls' medians)
    p50_s: float
    p99_s: float
    max_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientFleet:
    client: str
    fleet: str
    servers: int
    polled: Names
    never_polled: Names
    intervals: Intervals
    writes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetCoverage:
    fleet: str
    servers: int
    polled: int  # by any client
    never_polled: Names  # by any client


@dataclass(frozen=True, slots=True, kw_only=True)
class Recovery:
    client: str
    recovered: int  # servers it polled again after the fault
    not_recovered: Names  # servers it polled before and not since
    p50_s: float
    p99_s: float
    max_s: float
    attempts_per_s: float | None  # its connection attempts while the servers were offline


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultBehaviour:
    id: int
    kind: str
    servers: int
    lasted_s: float
    ended_s_ago: float
    clients: tuple[Recovery, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    since_s: float
    clients: tuple[ClientFleet, ...]
    fleets: tuple[FleetCoverage, ...]
    faults: tuple[FaultBehaviour, ...]


Polls = dict[str, dict[str, list[PollSummary]]]  # client -> server -> its polls


def report(
    found: Sequence[ServerClients],
    fleets: Mapping[str, Sequence[str]],  # fleet -> its servers, in the farm's order
    ended: Sequence[EndedFault],
    attempts: Callable[[int, str], float | None],  # (fault id, client) -> attempts/s
    now: float,
    since: float,
) -> Report:
    start = now - since
    polls: Polls = {}
    writes: dict[tuple[str, str], int] = {}
    for server in found:
        for client in server.clients:
            recent = [poll for poll in client.polls if poll.last_seen >= start]
            if recent:
                polls.setdefault(client.host, {})[server.server] = recent
            written = sum(n for code, n in client.requests.items() if code in WRITE_CODES)
            if written:
                writes[(client.host, server.server)] = written
    rows = [
        _client_fleet(host, fleet, names, by_server, writes, start)
        for host, by_server in sorted(polls.items())
        for fleet, names in fleets.items()
        if any(name in by_server for name in names)
    ]
    anyone = {server for by_server in polls.values() for server in by_server}
    coverage = [
        FleetCoverage(
            fleet=fleet,
            servers=len(names),
            polled=sum(name in anyone for name in names),
            never_polled=_names([name for name in names if name not in anyone]),
        )
        for fleet, names in fleets.items()
    ]
    behaviour = [_behaviour(fault, found, attempts, now) for fault in ended if fault.ended >= start]
    return Report(
        since_s=since, clients=tuple(rows), fleets=tuple(coverage), faults=tuple(behaviour)
    )


def _names(names: Sequence[str]) -> Names:
    return Names(count=len(names), names=tuple(names[:NAMES_SHOWN]))


def _client_fleet(
    host: str,
    fleet: str,
    names: Sequence[str],
    by_server: dict[str, list[PollSummary]],
    writes: dict[tuple[str, str], int],
    start: float,
) -> ClientFleet:
    mine = [poll for name in names for poll in by_server.get(name, ()) if poll.requests > 1]
    medians = [poll.p50_s for poll in mine]
    tails = sorted(poll.p99_s for poll in mine)
    return ClientFleet(
        client=host,
        fleet=fleet,
        servers=len(names),
        polled=_names([name for name in names if name in by_server]),
        never_polled=_names([name for name in names if name not in by_server]),
        intervals=Intervals(
            usual_s=round(statistics.median(medians), 4) if medians else 0.0,
            p50_s=round(statistics.median(medians), 4) if medians else 0.0,
            p99_s=round(tails[min(len(tails) - 1, int(0.99 * len(tails)))], 4) if tails else 0.0,
            # The window's largest, not the largest ever: a gap before `since` is not in it.
            max_s=round(max((poll.largest_since(start) for poll in mine), default=0.0), 4),
        ),
        writes=sum(writes.get((host, name), 0) for name in names),
    )


def _behaviour(
    fault: EndedFault,
    found: Sequence[ServerClients],
    attempts: Callable[[int, str], float | None],
    now: float,
) -> FaultBehaviour:
    servers = set(fault.servers)
    took: dict[str, list[float]] = {}
    missing: dict[str, list[str]] = {}
    for server in found:
        if server.server not in servers:
            continue
        for client in server.clients:
            before = [poll for poll in client.polls if poll.first_seen < fault.began]
            if not before:
                continue  # it did not poll this server before the fault: nothing to recover
            back = _recovered(before, fault.ended)
            if back is None:
                missing.setdefault(client.host, []).append(server.server)
            else:
                took.setdefault(client.host, []).append(back)
    recoveries = []
    for host in sorted({*took, *missing}):
        times = sorted(took.get(host, []))
        recoveries.append(
            Recovery(
                client=host,
                recovered=len(times),
                not_recovered=_names(sorted(missing.get(host, []))),
                p50_s=round(statistics.median(times), 3) if times else 0.0,
                p99_s=round(times[min(len(times) - 1, int(0.99 * len(times)))], 3)
                if times
                else 0.0,
                max_s=round(times[-1], 3) if times else 0.0,
                attempts_per_s=attempts(fault.id, host),
            )
        )
    return FaultBehaviour(
        id=fault.id,
        kind=fault.kind,
        servers=len(fault.servers),
        lasted_s=round(fault.ended - fault.began, 3),
        ended_s_ago=round(now - fault.ended, 3),
        clients=tuple(recoveries),
    )


def _recovered(polls: list[PollSummary], ended: float) -> float | None:
    """Seconds from `ended` to the client's first poll after it (None: none yet)."""
    firsts = []
    for poll in polls:
        spans = [o.ended for o in poll.outages if o.began <= ended <= o.ended]
        if spans:
            firsts.append(min(spans) - ended)
        elif poll.last_seen >= ended:
            firsts.append(0.0)  # it kept polling through the end: no gap to close
    return min(firsts) if firsts else None
