"""How a worker serves one server on the socket the master bound, by the server's transport.

Part of a worker (farm.worker.process starts its servers through `Transports.start`):
    tcp            MBAP on a TCP stream                 connection.ModbusConnection
    rtu-over-tcp   RTU frames (CRC-16) on a TCP stream  rtu_over_tcp.RtuConnection
    udp            one MBAP frame per datagram          udp.UdpEndpoint
    tls            MBAP inside TLS (port 802)           tls.TlsConnection
(each a module of this package, farm.worker.transports)
A stream server's connection builds its `Device` on the first connection; a UDP endpoint
on the first datagram. Either way an idle server keeps only its listener.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from farm.config.plan import ServerSpec, TlsSettings
from farm.worker.engine import Device
from farm.worker.limits.guard import ServerConnections
from farm.worker.transports.connection import ModbusConnection
from farm.worker.transports.rtu_over_tcp import RtuConnection
from farm.worker.transports.tls import TlsConnection, secured, server_context
from farm.worker.transports.udp import UdpEndpoint


class Listener(Protocol):
    """What a worker keeps of a started server: something to close when it stops."""

    def close(self) -> None: ...


class Devices(Protocol):
    """Where a server's `Device` comes from (the worker), and its connection limits."""

    def device(self, number: int) -> Device: ...
    def guard(self, number: int, device: Device) -> ServerConnections: ...


# Makes the protocol of a new connection: a ModbusConnection, or a TLS layer around one.
ConnectionClass = Callable[[Device, ServerConnections], asyncio.BaseProtocol]


class ConnectionFactory:
    """The protocol factory of one stream server; builds its `Device` on the first connection.

    Most servers of a large farm are never connected to, and a device's views on its banks
    and counters cost about 2 KiB: an idle server keeps only this object.
    """

    __slots__ = ("device", "devices", "guard", "make", "number")

    def __init__(self, devices: Devices, number: int, make: ConnectionClass) -> None:
        self.devices = devices
        self.number = number  # position in the shard (Assign.servers, the counters' order)
        self.make = make  # shared by the servers of a transport (and of a TLS fleet)
        self.device: Device | None = None
        self.guard: ServerConnections | None = None  # its limits (farm.worker.limits.guard)

    def __call__(self) -> asyncio.BaseProtocol:
        device, guard = self.device, self.guard
        if device is None or guard is None:
            device = self.device = self.devices.device(self.number)
            guard = self.guard = self.devices.guard(self.number, device)
        return self.make(device, guard)


@dataclass
class Transports:
    """A worker's way to start servers: where devices come from, the tally of TLS roles,
    and one connection class per fleet's TLS settings (one SSL context each)."""

    devices: Devices
    on_tls_session: Callable[[str | None], None]
    tls_classes: dict[TlsSettings, ConnectionClass] = field(default_factory=dict)

    async def start(self, spec: ServerSpec, number: int, sock: socket.socket) -> Listener:
        """Serve the shard's `number`-th server on `sock`; raises OSError or ssl.SSLError."""
        loop = asyncio.get_running_loop()
        if spec.transport == "udp":
            build = partial(self.devices.device, number)
            transport, _ = await loop.create_datagram_endpoint(
                lambda: UdpEndpoint(build), sock=sock
            )
            return transport
        factory = ConnectionFactory(self.devices, number, self._connection_class(spec))
        return await loop.create_server(factory, sock=sock)

    def _connection_class(self, spec: ServerSpec) -> ConnectionClass:
        if spec.transport == "rtu-over-tcp":
            return RtuConnection
        if spec.transport != "tls":
            return ModbusConnection
        assert spec.tls is not None, "the plan gives every tls server its settings"
        made = self.tls_classes.get(spec.tls)
        if made is None:
            context, on_session = server_context(spec.tls), self.on_tls_session

            def made(device: Device, guard: ServerConnections) -> asyncio.BaseProtocol:
                return secured(TlsConnection(device, guard, on_session), context)

            self.tls_classes[spec.tls] = made
        return made
