"""Who is asking: a `Caller` per connection (per sender for UDP), handed to the device on
every read so the engine can say who wrote (farm.worker.observe.writes).

Sits between the transports and the engine (... connection -> caller -> engine): a
connection makes its caller when it is made, cheaply (the peer's address is parsed only
when a write needs it), and sets `device.caller` and the read's arrival time once per read:
two attribute stores.
"""

from __future__ import annotations

from typing import Any

from farm.ipc.journal import Peer
from farm.worker.observe.clients import ClientBook, ClientStats


class Caller:
    """One client connection (or UDP sender) of one server."""

    __slots__ = ("_peer", "client", "host", "last", "now", "port", "source", "times", "unit")

    def __init__(self, host: str, port: int, source: str, client: ClientStats) -> None:
        self.host = host
        self.port = port
        self.source = source
        self._peer: Peer | None = None
        self.client = client  # its address's statistics on this server
        self.now = 0  # the arrival (perf_counter ns) of the read being answered
        # The request it sent last (its PDU and unit) and that request's arrivals: the
        # engine appends to `times` while the same request comes again.
        self.last = b""
        self.unit = -1
        self.times: list[int] = []

    def seen(self, unit: int, pdu: bytes) -> None:
        """A request other than the last one (the engine's slower branch)."""
        key = (unit, pdu[:5])
        client = self.client
        times = client.polls.get(key)
        if times is None:
            times = client.first(key, self.now)
            if times is None:
                return
        times.append(self.now)
        self.last, self.unit, self.times = pdu, unit, times

    @classmethod
    def of(cls, peername: Any, source: str, book: ClientBook) -> Caller:
        """From a transport's "peername" (a (host, port, ...) tuple, or something else)."""
        if isinstance(peername, tuple) and len(peername) >= 2:
            host, port = str(peername[0]), int(peername[1])
        else:
            host, port = "", 0
        return cls(host, port, source, book.connected(host))

    def peer(self) -> Peer:
        """The packed form the journal stores, made on first use."""
        if self._peer is None:
            self._peer = Peer.of(self.host, self.port, self.source)
        return self._peer

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
