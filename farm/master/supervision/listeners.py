"""Listening sockets for every server (TCP, or UDP for a udp fleet), bound by the master
before any worker starts.

Sits between plan and supervisor in the data flow. Binding in the master means a busy port
is found before a single process is spawned (one clear error, nothing to clean up), and a
port stays open while its worker is replaced: connections made meanwhile wait in the
kernel's backlog instead of being refused. Workers inherit the sockets at spawn, as bare
file descriptors (`farm.ipc.spawn.InheritedSockets`).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable

from farm.config.plan import Plan, ServerSpec
from farm.errors import ConfigError, PortBusyError, ResourceLimitError
from farm.ipc.spawn import connection_cap
from farm.openfiles import raise_open_files_limit, reserve_descriptors

BACKLOG = 256
FILES_RESERVED = 256  # pipes, the API, connections, and whatever Python opens itself


def ensure_file_limit(needed: int) -> None:
    """Raise the open-files limit; fail clearly if even the hard limit is short."""
    limit = raise_open_files_limit()
    if limit is not None and needed + FILES_RESERVED > limit:
        raise ResourceLimitError(
            f"{needed} servers need about {needed + FILES_RESERVED} open files but this "
            f"machine allows {limit} (ulimit -Hn); raise the limit or run fewer servers"
        )
    reserve_descriptors(needed + FILES_RESERVED)


def capacity(plan: Plan) -> str:
    """One line at start: the open-files limit, and how many devices and connections fit.

    A worker may hold `connection_cap` connections (its limit less its listening sockets and
    its own files); a device at most its template's `connections.max`.
    """
    open_files = raise_open_files_limit()  # raised before binding: this reads it
    fit = wanted = 0
    caps = []
    for shard in plan.shards:
        cap = connection_cap(open_files, len(shard.servers))
        streams = [spec for spec in shard.servers if spec.transport != "udp"]  # no connections
        want = sum(plan.templates[spec.template].connections.max for spec in streams)
        caps.append(cap)
        fit += min(cap, want)
        wanted += want
    maxes = {plan.templates[spec.template].connections.max for spec in plan.servers()}
    low, high = min(maxes, default=0), max(maxes, default=0)
    most = f"{low:,}" if low == high else f"{low:,}-{high:,}"
    limit = f"{open_files:,}" if open_files else "unlimited"
    line = (
        f"open files: {limit} per process; {plan.servers_total:,} devices on "
        f"{len(plan.shards)} workers, {fit:,} client connections fit (up to {most} per device"
    )
    if wanted > fit:
        line += f", at most {min(caps):,} per worker: more are refused"
    return line + ")"


EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"


def ephemeral_overlap(plan: Plan, path: str = EPHEMERAL_RANGE_FILE) -> str | None:
    """A warning when servers' ports fall in the kernel's ephemeral range: any program's
    outgoing connection may take such a port while its server is stopped or offline, and it
    could not listen there again. None when no port does (or the range cannot be read)."""
    try:
        with open(path) as file:
            low, high = (int(each) for each in file.read(64).split()[:2])
    except (OSError, ValueError):
        return None
    inside = sorted({spec.port for spec in plan.servers() if low <= spec.port <= high})
    if not inside:
        return None
    return (
        f"{len(inside)} server ports ({inside[0]}-{inside[-1]}) fall in the ephemeral port "
        f"range {low}-{high} ({path}): while such a server is stopped or offline, another "
        "program's outgoing connection can take its port and it cannot come back; put the "
        "servers below the range (--port-base, addressing.port_start) or shrink the range"
    )


def describe(addresses: Iterable[tuple[str, int]], most: int = 4) -> str:
    """Addresses as runs: '127.0.0.1:5020-5022, 127.10.0.1-127.10.0.9:502'.

    Consecutive ports on one host make a run, and so do consecutive hosts on one port;
    past `most` runs the rest is counted, not listed.
    """

    # Each host's number once (the ready summary of 10,000 servers took half a second of
    # the master's loop when the runs below parsed each address three times).
    numbers = {host: _host_number(host) for host, _ in set(addresses)}
    runs: list[list[tuple[str, int]]] = []
    for number, port, host in sorted({(numbers[h], p, h) for h, p in addresses}):
        if runs:
            (first_host, first_port), (last_host, last_port) = runs[-1][0], runs[-1][-1]
            next_port = last_host == host and last_port == port - 1 and first_host == host
            next_host = last_port == port == first_port and number == numbers[last_host] + 1
            if next_port or next_host:
                runs[-1].append((host, port))
                continue
        runs.append([(host, port)])
    texts = []
    for run in runs[:most]:
        (first_host, first_port), (last_host, last_port) = run[0], run[-1]
        if len(run) == 1:
            texts.append(f"{first_host}:{first_port}")
        elif first_host == last_host:
            texts.append(f"{first_host}:{first_port}-{last_port}")
        else:
            texts.append(f"{first_host}-{last_host}:{first_port}")
    if len(runs) > most:
        texts.append(f"and {sum(len(r) for r in runs[most:])} more")
    return ", ".join(texts)


def _host_number(host: str) -> int:
    """An address as a number (IPv4 at C speed: the common case by far); -1 for a name."""
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, host), "big")
    except OSError:
        pass
    try:
        return int(ipaddress.ip_address(host))
    except ValueError:
        return -1


def reserve(spec: ServerSpec) -> socket.socket | None:
    """A bound, non-listening socket on a stopped server's address: connections to it are
    refused, and no other program's socket can take the port meanwhile (an outgoing
    connection's ephemeral port, another listener); `bind_one` listens on it again. None for
    UDP (a bound datagram socket receives) or when the address cannot be bound now."""
    if spec.transport == "udp":
        return None
    family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Past the TIME_WAIT entries of the connections just dropped; then off, so that no
        # other socket, SO_REUSEADDR or not, can bind the port beside it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((spec.host, spec.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    except OSError:
        sock.close()
        return None
    return sock


def bind_one(spec: ServerSpec, reserved: socket.socket | None = None) -> socket.socket:
    """The server's listening socket: on its `reserved` socket if it has one, else bound
    afresh; raises OSError."""
    if reserved is not None:
        try:
            reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            reserved.listen(BACKLOG)
            reserved.setblocking(False)
            return reserved
        except OSError:
            reserved.close()  # bound afresh below, which says why it cannot be
    family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
    datagrams = spec.transport == "udp"
    sock = socket.socket(family, socket.SOCK_DGRAM if datagrams else socket.SOCK_STREAM)
    try:
        if not datagrams:
            # Lets a replacement worker, or the next farm, listen while old connections
            # linger in TIME_WAIT; it does not let two listeners share a port. (On a UDP
            # socket it would: two farms could then bind one port, so not there.)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((spec.host, spec.port))
        if not datagrams:
            sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _hint(code: int | None) -> str:
    if code == errno.EADDRNOTAVAIL:  # an address of a subnet that is not local (yet)
        return " (not an address of this host: `farm net plan FILE` shows the route to add)"
    if code == errno.EACCES:
        return " (a port below 1024 needs root or CAP_NET_BIND_SERVICE)"
    return ""


def bind_all(specs: list[ServerSpec]) -> dict[int, socket.socket]:
    """Bind every server's address; all or nothing."""
    ensure_file_limit(len(specs))
    bound: dict[int, socket.socket] = {}
    busy: list[tuple[str, int]] = []
    other: list[str] = []
    hints: set[str] = set()
    for spec in specs:
        try:
            bound[spec.index] = bind_one(spec)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                busy.append((spec.host, spec.port))
            elif len(other) < 3:
                other.append(f"{spec.address}: {exc.strerror or exc}")
                hints.add(_hint(exc.errno))
    if busy or other:
        for sock in bound.values():
            sock.close()
        if busy:
            raise PortBusyError(
                f"address already in use: {describe(busy)} "
                f"({len(busy)} of {len(specs)} servers); another farm? `farm status` shows "
                "it and `farm down` stops it (with its --api-port); else stop what holds them, "
                "or move the servers (--port-base, or the fleets' addressing in a config file)"
            )
        raise ConfigError("cannot listen on " + "; ".join(other) + "".join(sorted(hints)))
    return bound
