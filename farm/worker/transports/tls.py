"""Modbus/TCP Security: MBAP frames inside TLS 1.2 or later, and the client's role.

Sits beside the engine in a worker (... worker -> tls -> connection -> engine -> banks). A fleet's
`TlsSettings` give the server's certificate and key and, optionally, the CA its clients'
certificates must chain to: then a client without such a certificate is refused in the
handshake. `secured` puts the TLS layer under each connection itself rather than letting
`create_server(ssl=...)` do it, so that a refused client is counted
(`TLS_HANDSHAKE_FAILURES`) instead of silently dropped. After the handshake the connection
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
from typing import Any

import uvloop.loop

from farm.config.plan import TlsSettings
from farm.ipc.stats import TLS_HANDSHAKE_FAILURES
from farm.worker.engine import Device
from farm.worker.limits.guard import ServerConnections
from farm.worker.transports.connection import HIGH_WATER_BYTES, ModbusConnection

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

    __slots__ = ("on_session", "role")
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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Called once the handshake has succeeded, with the TLS transport."""
        ssl_object = transport.get_extra_info("ssl_object")
        self.role = role_of(ssl_object.getpeercert(binary_form=True) if ssl_object else None)
        self.on_session(self.role)
        # Backpressure is the engine's (its paused connection stops the TLS layer handing it
        # data); the layer itself reads up to 256 KiB of records ahead by default, 64 KiB here.
        tls_transport: Any = transport
        tls_transport.set_read_buffer_limits(high=HIGH_WATER_BYTES)
        super().connection_made(transport)


def secured(connection: TlsConnection, context: ssl.SSLContext) -> asyncio.BaseProtocol:
    """The protocol a TLS server's connection starts with: the TLS layer, which hands the
    decrypted stream to `connection` after the handshake, and counts a failed handshake."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    counters = connection.device.counters

    def handshake_done(done: asyncio.Future[None]) -> None:
        if done.cancelled() or done.exception() is not None:
            counters[TLS_HANDSHAKE_FAILURES] += 1

    waiter.add_done_callback(handshake_done)
    layer: asyncio.BaseProtocol = _SSL_PROTOCOL(
        loop,
        connection,
        context,
        waiter,
        server_side=True,
        ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
    )
    return layer
