"""Who is asking: a `Caller` per connection (per sender for UDP), handed to the device on
every read so the engine can say who wrote (farm.worker.observe.writes).

Sits between the transports and the engine (... connection -> caller -> engine): a
connection makes its caller when it is made, cheaply (the peer's address is parsed only
when a write needs it), and sets `device.caller` once per read: one attribute store.
"""

from __future__ import annotations

from typing import Any

from farm.ipc.journal import Peer


class Caller:
    """One client connection (or UDP sender) of one server."""

    __slots__ = ("_peer", "host", "port", "source")

    def __init__(self, host: str, port: int, source: str) -> None:
        self.host = host
        self.port = port
        self.source = source
        self._peer: Peer | None = None

    @classmethod
    def of(cls, peername: Any, source: str) -> Caller:
        """From a transport's "peername" (a (host, port, ...) tuple, or something else)."""
        if isinstance(peername, tuple) and len(peername) >= 2:
            return cls(str(peername[0]), int(peername[1]), source)
        return cls("", 0, source)

    def peer(self) -> Peer:
        """The packed form the journal stores, made on first use."""
        if self._peer is None:
            self._peer = Peer.of(self.host, self.port, self.source)
        return self._peer

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
