"""One row a client: the servers it polls, its request rate, its poll intervals, and the
servers it polled before and has not polled for STALE_INTERVALS of its interval.

A client is an address (its reconnections, from new ports, are the same client). Built from
what the workers said (farm.master.observe.gather), on the master's monotonic clock.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from farm.ipc.polling import STALE_INTERVALS, ClientSummary, PollSummary, ServerClients

WRITE_CODES = (5, 6, 15, 16, 22, 23)


@dataclass(frozen=True, slots=True, kw_only=True)
class Poll:
    """One request a client repeats on one server."""

    server: str
    unit: int
    function_code: int
    address: int
    count: int
    requests: int
    last_s: float
    p50_s: float
    p99_s: float
    max_gap_s: float
    seen_s_ago: float  # since its last poll


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientRow:
    client: str  # its address
    servers: tuple[str, ...]  # those it polls (a read it repeats)
    requests_per_s: float
    poll_p50_s: float  # the median of its polls' medians
    poll_p99_s: float  # the 99th percentile of its polls' 99th percentiles
    connections: int
    exceptions: int  # exception answers it received
    requests: dict[int, int]  # by function code
    writes: int
    stale: tuple[str, ...]  # polled before, not for STALE_INTERVALS of its interval
    polls: tuple[Poll, ...] = ()  # with `detail` only


def client_rows(found: list[ServerClients], now: float, detail: bool = False) -> list[ClientRow]:
    """Every client of the servers in `found`, busiest first."""
    by_host: dict[str, list[tuple[str, ClientSummary]]] = {}
    for server in found:
        for client in server.clients:
            by_host.setdefault(client.host, []).append((server.server, client))
    rows = [_row(host, seen, now, detail) for host, seen in by_host.items()]
    rows.sort(key=lambda row: (-row.requests_per_s, row.client))
    return rows


def _row(host: str, seen: list[tuple[str, ClientSummary]], now: float, detail: bool) -> ClientRow:
    polls: list[tuple[str, PollSummary]] = [(s, p) for s, c in seen for p in c.polls]
    requests: dict[int, int] = {}
    for _, client in seen:
        for code, count in client.requests.items():
            requests[code] = requests.get(code, 0) + count
    medians = [poll.p50_s for _, poll in polls if poll.requests > 1]
    tails = sorted(poll.p99_s for _, poll in polls if poll.requests > 1)
    stale = {server for server, poll in polls if is_stale(poll, now)}
    return ClientRow(
        client=host,
        servers=tuple(sorted({server for server, _ in polls})),
        requests_per_s=round(sum(poll.rate for _, poll in polls if not is_stale(poll, now)), 3),
        poll_p50_s=round(statistics.median(medians), 4) if medians else 0.0,
        poll_p99_s=round(tails[min(len(tails) - 1, int(0.99 * len(tails)))], 4) if tails else 0.0,
        connections=sum(client.connections for _, client in seen),
        exceptions=sum(client.exceptions for _, client in seen),
        requests=dict(sorted(requests.items())),
        writes=sum(count for code, count in requests.items() if code in WRITE_CODES),
        stale=tuple(sorted(stale)),
        polls=tuple(_poll(server, poll, now) for server, poll in polls) if detail else (),
    )


def is_stale(poll: PollSummary, now: float) -> bool:
    """Polled more than once before, and not for STALE_INTERVALS of its usual interval."""
    return poll.requests > 1 and now - poll.last_seen > STALE_INTERVALS * max(poll.p50_s, 0.001)


def _poll(server: str, poll: PollSummary, now: float) -> Poll:
    return Poll(
        server=server,
        unit=poll.unit,
        function_code=poll.function_code,
        address=poll.address,
        count=poll.count,
        requests=poll.requests,
        last_s=round(poll.last_s, 4),
        p50_s=round(poll.p50_s, 4),
        p99_s=round(poll.p99_s, 4),
        max_gap_s=round(poll.max_gap_s, 4),
        seen_s_ago=round(max(0.0, now - poll.last_seen), 3),
    )
