"""Connection attempts to servers a fault holds offline, by client address: the SYNs the
kernel refuses for the farm (a bound, non-listening socket answers RST, and no program sees
the attempt). Counted with a raw socket while such a fault is active, when the master may
open one (CAP_NET_RAW, as root); otherwise not counted, and the report says so (null).

A classic BPF filter in the kernel passes TCP SYNs without ACK only, so the master reads
nothing else; IPv4 only (a server on an IPv6 address is not counted).
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import logging
import socket
import struct
import time
from dataclasses import dataclass, field

log = logging.getLogger("farm")
SO_ATTACH_FILTER = 26
# ldxb 4*([0]&0xf); ldb [x+13]; and #0x12; jeq #0x02, accept, drop: a SYN without ACK.
_SYN_ONLY = (
    (0xB1, 0, 0, 0),
    (0x50, 0, 0, 13),
    (0x54, 0, 0, 0x12),
    (0x15, 0, 1, 0x02),
    (0x06, 0, 0, 0xFFFF),
    (0x06, 0, 0, 0),
)
READ_AT_ONCE = 256


@dataclass
class Watched:
    """One fault's servers, while it holds them down."""

    began: float
    ports: dict[int, str | None]  # port -> its IPv4 address (None: any)
    ended: float | None = None
    counts: dict[str, int] = field(default_factory=dict)  # client address -> SYNs


class ConnectAttempts:
    """Counts SYNs to the ports of the servers faults hold offline (see the module doc)."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.filter: ctypes.Array[ctypes.c_char] | None = None  # kept alive while attached
        self.unavailable = False
        self.faults: dict[int, Watched] = {}

    def watch(self, fault_id: int, addresses: list[tuple[str, int]]) -> None:
        ports = {port: _ipv4(host) for host, port in addresses}
        self.faults[fault_id] = Watched(began=time.monotonic(), ports=ports)
        if self.sock is None and not self.unavailable:
            self._open()

    def unwatch(self, fault_id: int) -> None:
        watched = self.faults.get(fault_id)
        if watched is not None and watched.ended is None:
            watched.ended = time.monotonic()
        while len(self.faults) > 256:
            del self.faults[next(iter(self.faults))]
        if self.sock is not None and all(w.ended is not None for w in self.faults.values()):
            self.close()

    def rate(self, fault_id: int, host: str) -> float | None:
        """`host`'s attempts per second while fault `fault_id` held its servers down; None
        when the farm cannot count them (or did not watch that fault)."""
        watched = self.faults.get(fault_id)
        if watched is None or self.unavailable:
            return None
        lasted = max(0.001, (watched.ended or time.monotonic()) - watched.began)
        return round(watched.counts.get(host, 0) / lasted, 3)

    def _open(self) -> None:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        except OSError as error:  # no CAP_NET_RAW: attempts go uncounted
            self.unavailable = True
            log.info("connection attempts to offline servers are not counted: %s", error)
            return
        program = b"".join(struct.pack("HBBI", *op) for op in _SYN_ONLY)
        self.filter = ctypes.create_string_buffer(program)
        address = ctypes.addressof(self.filter)
        sock.setsockopt(
            socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("@HP", len(_SYN_ONLY), address)
        )
        sock.setblocking(False)
        # Packets that came before the filter was attached: drop them.
        _drain(sock)
        self.sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read)

    def _read(self) -> None:
        assert self.sock is not None
        for _ in range(READ_AT_ONCE):
            try:
                packet = self.sock.recv(128)
            except (BlockingIOError, InterruptedError):
                return
            self._count(packet)

    def _count(self, packet: bytes) -> None:
        if len(packet) < 24:
            return
        header = (packet[0] & 0x0F) * 4
        if len(packet) < header + 4:
            return
        port = (packet[header + 2] << 8) | packet[header + 3]
        target = socket.inet_ntoa(packet[16:20])
        source = socket.inet_ntoa(packet[12:16])
        for watched in self.faults.values():
            if watched.ended is None and port in watched.ports:
                wanted = watched.ports[port]
                if wanted is None or wanted == target:
                    watched.counts[source] = watched.counts.get(source, 0) + 1

    def close(self) -> None:
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None


def _ipv4(host: str) -> str | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv4Address) and not address.is_unspecified:
        return str(address)
    return None


def _drain(sock: socket.socket) -> None:
    while True:
        try:
            sock.recv(128)
        except (BlockingIOError, InterruptedError):
            return
