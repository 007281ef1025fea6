"""The load generator's connections for each transport: MBAP over TCP or TLS, RTU frames
over TCP, MBAP datagrams over UDP.

Part of `farm bench` (farm.bench.loadgen runs them). `connection_class` picks the class for a
transport; each opens itself (`open`), so loadgen's loop is the same for all four:
    tcp, tls       farm.bench.connection.Connection (TLS: the same, with the run's SSL context)
    rtu-over-tcp   `RtuConnection`: unit id, PDU, CRC-16; RTU has no transaction id, so
                   answers match requests in order
    udp            `UdpConnection`: one request per datagram, answers matched by transaction id
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, cast

from farm.bench.connection import Connection
from farm.modbus import pdu, rtu


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientTls:
    """A TLS client's files: the CA that signed the farm's certificate (None: do not check
    it) and the client's certificate and key (None: send none)."""

    ca: str | None = None
    certificate: str | None = None
    key: str | None = None

    def context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # Devices at addresses of their own share one certificate: check that the CA signed
        # it, not that it names the address dialled (`farm certs` names loopback only).
        context.check_hostname = False
        if self.ca is None:
            context.verify_mode = ssl.CERT_NONE
        else:
            context.load_verify_locations(self.ca)
        if self.certificate is not None:
            context.load_cert_chain(self.certificate, self.key)
        return context


def tls_refusal(target: tuple[str, int], tls: ClientTls, timeout: float = 3.0) -> str | None:
    """Why the TLS server at `target` refuses this client, or None if it answers: one
    handshake and one request, blocking (the CLI's, after a run; not on a loop).

    A handshake that fails says why (OpenSSL's reason: an unknown CA, ...). A TLS 1.3 server
    that wants a client certificate lets the client's side of the handshake finish and then
    closes the connection, with an alert from OpenSSL, or with none from uvloop's servers
    (the farm's): a close before any answer is that refusal.
    """
    request = bytes.fromhex("000100000006010300000001")  # FC 3, one register, unit 1
    try:
        with (
            socket.create_connection(target, timeout=timeout) as raw,
            tls.context().wrap_socket(raw) as wrapped,
        ):
            wrapped.sendall(request)
            if wrapped.recv(1):
                return None
    except ssl.SSLError as error:
        return str(error.reason or error)
    except TimeoutError:
        return None  # a slow server, not a refusal: the report's timeouts say so
    except OSError as error:
        if not isinstance(error, ConnectionResetError):
            return None
    return "the server closed the connection right after the TLS handshake, without an answer"


class RtuConnection(Connection):
    """RTU frames over TCP; answers come back in request order."""

    def frame_of(self, tid: int) -> bytes:
        frames = self.cycle.rtu_frames
        return frames[tid % len(frames)]

    def send(self, starts: list[float]) -> None:
        run, inflight, tid = self.run, self.inflight, self.tid
        frames = []
        for start in starts:
            tid = (tid + 1) & 0xFFFF
            inflight[tid] = start
            frames.append(self.frame_of(tid))
        self.tid = tid
        run.tally.sent += len(starts)
        assert self.transport is not None
        self.transport.write(b"".join(frames))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        data = self.buffer + data if self.buffer else data
        tally, inflight = self.run.tally, self.inflight
        expected = self.cycle.function_codes
        position, ok = 0, 0
        while len(data) - position >= 5:
            length = rtu.response_length(data, position)
            if length == rtu.SEARCH:
                length = rtu.search_end(data, position)
            if length == rtu.NEED_MORE or position + length > len(data):
                break
            end = position + length
            if not inflight or not rtu.crc_ok(data, position, end):
                tally.unexpected += 1
                position = end
                continue
            tid = next(iter(inflight))  # the oldest request: RTU answers come in order
            self.observe(now - inflight.pop(tid))
            fc, wanted = data[position + 1], expected[tid % len(expected)]
            if fc == wanted:
                ok += 1
            elif fc == wanted | pdu.EXCEPTION_BIT:
                code = data[position + 2]
                tally.exceptions[code] = tally.exceptions.get(code, 0) + 1
                tally.exceptions_total += 1
            else:
                tally.unexpected += 1
            position = end
        self.buffer = data[position:]
        tally.ok += ok
        self.after_answers(now)


class UdpConnection(Connection, asyncio.DatagramProtocol):
    """MBAP datagrams: one request each, to the target's port; a lost one times out."""

    async def open(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(
            loop.create_datagram_endpoint(lambda: self, remote_addr=self.target), timeout
        )

    def send(self, starts: list[float]) -> None:
        run, inflight, tid = self.run, self.inflight, self.tid
        tails = self.cycle.tails
        transport = cast(Any, self.transport)
        for start in starts:
            tid = (tid + 1) & 0xFFFF
            inflight[tid] = start
            transport.sendto(tid.to_bytes(2, "big") + tails[tid % len(tails)])
        self.tid = tid
        run.tally.sent += len(starts)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.buffer = b""  # a datagram is whole: nothing carries over
        self.data_received(data)

    def error_received(self, exc: Exception) -> None:
        """ICMP port unreachable for an earlier datagram: it times out like any lost one."""


def connection_class(transport: str) -> type[Connection]:
    """The connection class of a transport (tcp and tls share one: the run's SSL context
    makes the difference)."""
    if transport == "rtu-over-tcp":
        return RtuConnection
    if transport == "udp":
        return UdpConnection
    return Connection
