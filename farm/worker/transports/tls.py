"""Modbus/TCP Security: MBAP frames inside TLS 1.2 or later, and the client's role.

Sits beside the engine in a worker (... worker -> tls -> connection -> engine -> banks). A fleet's
`TlsSettings` give the server's certificate and key and, optionally, the CA its clients'
certificates must chain to: then a client without such a certificate is refused in the
handshake. `secured` puts the TLS layer under each connection itself rather than letting
`create_server(ssl=...)` do it, so that a refused client is counted
(`TLS_HANDSHAKE_FAILURES`) instead of silently dropped, and so that the server's connection
limits admit a connection at TCP accept, before its handshake, whose time the frame timeout
bounds (`Admission`). After the handshake the connection
is a `ModbusConnection` on the TLS transport, with its backpressure and timeouts, whose
`role` holds the role its client's certificate names in the extension
1.3.6.1.4.1.50316.802.1 (an ASN.1 UTF8String), or None: the role a fault can match on, and
that the shard's counters tally for /metrics.
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import uvloop.loop

from farm.config.plan import TlsSettings
from farm.ipc.stats import TLS_HANDSHAKE_FAILURES
from farm.worker.engine import Device
from farm.worker.limits.guard import ServerConnections
from farm.worker.limits.wheel import NOT_SCHEDULED
from farm.worker.transports.connection import HIGH_WATER_BYTES, ModbusConnection, cap_send_buffer

# uvloop's TLS layer (Cython), or asyncio's (Python) if a uvloop lacks it: both take a
# waiter that fails with the handshake, which `create_server(ssl=...)` would only log.
_SSL_PROTOCOL: Any = getattr(uvloop.loop, "SSLProtocol", sslproto.SSLProtocol)
ROLE_OID = "1.3.6.1.4.1.50316.802.1"
HANDSHAKE_TIMEOUT_S = 10.0
UTF8_STRING = 0x0C


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """The SSL context of a fleet's settings (a worker builds one per fleet, not per server)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # the Modbus/TCP Security minimum
    context.load_cert_chain(settings.certificate, settings.key)
    if settings.client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(settings.client_ca)
    return context


def role_of(certificate: bytes | None) -> str | None:
    """The role a DER certificate names, or None (no certificate, no role, not readable)."""
    if not certificate:
        return None
    # Imported here: only a worker serving TLS pays for loading cryptography.
    from cryptography import x509

    try:
        extension = x509.load_der_x509_certificate(certificate).extensions.get_extension_for_oid(
            x509.ObjectIdentifier(ROLE_OID)
        )
    except (ValueError, x509.ExtensionNotFound):
        return None
    value = extension.value
    return _utf8_string(value.value) if isinstance(value, x509.UnrecognizedExtension) else None


def _utf8_string(der: bytes) -> str | None:
    """The text of a DER UTF8String, or None if `der` is not one."""
    if len(der) < 2 or der[0] != UTF8_STRING:
        return None
    length, start = der[1], 2
    if length & 0x80:  # long form: the next (length & 0x7F) bytes hold the length
        size = length & 0x7F
        length, start = int.from_bytes(der[2 : 2 + size], "big"), 2 + size
    if start + length != len(der):
        return None
    try:
        return der[start:].decode()
    except UnicodeDecodeError:
        return None


class TlsConnection(ModbusConnection):
    """MBAP frames inside TLS, as `ModbusConnection` has them, and the client's role."""

    __slots__ = ("handshaking", "on_session", "role")
    source = "tls"

    def __init__(
        self,
        device: Device,
        guard: ServerConnections,
        on_session: Callable[[str | None], None],
    ) -> None:
        super().__init__(device, guard)
        self.on_session = on_session  # tallies the client's role
        self.role: str | None = None
        self.handshaking = False  # admitted at TCP accept, TLS handshake not finished yet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Called once the handshake has succeeded, with the TLS transport."""
        ssl_object = transport.get_extra_info("ssl_object")
        self.role = role_of(ssl_object.getpeercert(binary_form=True) if ssl_object else None)
        self.on_session(self.role)
        # Backpressure is the engine's (its paused connection stops the TLS layer handing it
        # data); the layer itself reads up to 256 KiB of records ahead by default, 64 KiB here.
        tls_transport: Any = transport
        tls_transport.set_read_buffer_limits(high=HIGH_WATER_BYTES)
        self.handshaking = False
        self.partial_at = NOT_SCHEDULED  # the handshake's deadline is over
        self.opened(transport)  # admitted already, at TCP accept (`Admission`)


def secured(connection: TlsConnection, context: ssl.SSLContext) -> asyncio.BaseProtocol:
    """The protocol a TLS server's connection starts with: the TLS layer, which hands the
    decrypted stream to `connection` after the handshake, and counts a failed handshake.
    The connection is admitted by its server's limits at TCP accept, before the handshake
    (`Admission`)."""
    return Admission(connection, context)


class Admission(asyncio.Protocol):
    """A TLS connection's first protocol, on the plain TCP transport: the server's limits
    admit it at accept (so handshaking connections count against the device's `max` and the
    worker's cap like any other), its frame timeout bounds the handshake, and then the TLS
    layer takes over the transport."""

    __slots__ = ("connection", "context")

    def __init__(self, connection: TlsConnection, context: ssl.SSLContext) -> None:
        self.connection = connection
        self.context = context

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        connection = self.connection
        raw = cast(asyncio.Transport, transport)
        connection.transport = raw  # what the limits close until the handshake is done
        connection.handshaking = True
        cap_send_buffer(raw)
        if not connection.guard.admit(connection):
            return  # refused: closed and counted; connection_lost comes to this protocol
        # Nothing of a frame can arrive before the handshake ends: until it does, the frame
        # timeout runs (and closes a stalled handshake, counted as a frame timeout).
        connection.guard.frame_started(connection)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        waiter.add_done_callback(partial(_handshake_done, connection))
        layer: asyncio.BaseProtocol = _SSL_PROTOCOL(
            loop,
            connection,
            self.context,
            waiter,
            server_side=True,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
        )
        raw.set_protocol(layer)
        layer.connection_made(raw)

    def connection_lost(self, exc: Exception | None) -> None:
        # Only a refused connection ends here (else the TLS layer has the transport).
        self.connection.transport = None
        self.connection.guard.release(self.connection)


def _handshake_done(connection: TlsConnection, done: asyncio.Future[None]) -> None:
    """The TLS layer's waiter: count a failed handshake; a connection whose handshake never
    finished (failed, timed out, closed by the limits) leaves its server's books here, since
    the TLS layer tells only connections that got through of their end."""
    if done.cancelled() or done.exception() is not None:
        connection.device.counters[TLS_HANDSHAKE_FAILURES] += 1
    if connection.handshaking:
        connection.handshaking = False
        connection.transport = None
        connection.guard.release(connection)
