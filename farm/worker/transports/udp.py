"""Modbus over UDP: one MBAP frame per datagram, the answer to its sender.

Sits beside the engine in a worker (... worker -> udp -> engine -> banks). One `UdpEndpoint`
per server on the datagram socket the master bound. A datagram that is not exactly one
MBAP frame (protocol id 0, a length field that matches the datagram) is counted as
malformed and dropped: there is no connection to close, and no stream to resynchronise.
UDP has no connections either, so a UDP server's connection series stay at 0. A faulted
server's datagrams go through farm.worker.faults.hooks as a connection's reads do, each as its own
one-request `_Datagram`: a delay holds its answer back, a disconnect or reset answers nothing.
Datagrams cannot be pushed back on as a stream can: past HELD_DATAGRAMS answers held back by
a server's faults, a new datagram is dropped (counted as unanswered), as a device with a full
receive queue drops it, or a flood into a long delay would hold answers without limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any, cast

from farm.ipc.stats import BYTES_RECEIVED, BYTES_SENT, MALFORMED_FRAMES, UNANSWERED
from farm.modbus import mbap
from farm.worker.engine import Device
from farm.worker.framing import MBAP, record_duration
from farm.worker.observe.callers import Caller
from farm.worker.transports.connection import ModbusConnection

_HEADER = mbap.HEADER
HELD_DATAGRAMS = 1024  # answers one server holds back at most (~0.3 MiB with their timers)
CALLERS = 64  # senders a server remembers (a UDP "connection" is its sender's address)


class UdpEndpoint(asyncio.DatagramProtocol):
    """One server's datagram socket; its `Device` is built with the first datagram."""

    def __init__(self, build: Callable[[], Device]) -> None:
        self.build = build
        self.device: Device | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.callers: dict[Any, Caller] = {}  # by sender, the CALLERS last seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        arrived = perf_counter_ns()
        device = self.device
        if device is None:
            device = self.device = self.build()
        caller = device.caller = self._caller(device, addr)
        caller.now = arrived
        counters = device.counters
        counters[BYTES_RECEIVED] += len(data)
        if len(data) < 8:
            counters[MALFORMED_FRAMES] += 1
            return
        transaction, protocol, length, unit = _HEADER.unpack_from(data)
        if not mbap.header_ok(protocol, length) or length + 6 != len(data):
            counters[MALFORMED_FRAMES] += 1
            return
        faults = device.faults
        if faults is not None:  # the one check a server without faults pays
            if faults.pending >= HELD_DATAGRAMS:
                counters[UNANSWERED] += 1
                return
            datagram = cast(ModbusConnection, _Datagram(device, _Reply(self, addr)))
            faults.answer_frames(datagram, arrived, [(transaction, unit, data[7:])], MBAP)
            return
        response = device.answer(unit, data[7:])
        if response is None or self.transport is None:
            return
        out = _HEADER.pack(transaction, 0, len(response) + 1, unit) + response
        self.transport.sendto(out, addr)
        counters[BYTES_SENT] += len(out)
        record_duration(counters, 1, perf_counter_ns() - arrived)

    def _caller(self, device: Device, addr: Any) -> Caller:
        callers = self.callers
        caller = callers.get(addr)
        if caller is None:
            if len(callers) >= CALLERS:
                del callers[next(iter(callers))]
            caller = callers[addr] = Caller.of(addr, "udp", device.client_book())
        return caller

    def error_received(self, exc: Exception) -> None:
        """An ICMP error for an earlier answer (its sender went away): nothing to do."""


class _Reply:
    """The transport a faulted answer to one datagram is written to: each write is a
    datagram to the request's sender; there is no connection to close or reset."""

    __slots__ = ("addr", "endpoint")

    def __init__(self, endpoint: UdpEndpoint, addr: Any) -> None:
        self.endpoint = endpoint
        self.addr = addr

    def write(self, data: bytes) -> None:
        if self.endpoint.transport is not None:
            self.endpoint.transport.sendto(data, self.addr)

    def is_closing(self) -> bool:
        return self.endpoint.transport is None or self.endpoint.transport.is_closing()

    def close(self) -> None:
        """A disconnect fault: the answer is not sent, and there is nothing to close."""

    def abort(self) -> None:
        """A reset fault: as a disconnect."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _Datagram:
    """One request datagram as farm.worker.faults.hooks sees a connection: its device, its (empty)
    buffer, its own outbox, and a transport that answers its sender."""

    __slots__ = ("buffer", "device", "outbox", "transport")

    def __init__(self, device: Device, reply: _Reply) -> None:
        self.device = device
        self.transport = reply
        self.buffer = bytearray()
        self.outbox = None

    def hold(self, held: bool) -> None:
        """Answers piling up would stop a connection's reading; a datagram has no more to read."""

    def close(self) -> None:
        """A garbled stream would close a connection; a datagram has nothing to close."""
