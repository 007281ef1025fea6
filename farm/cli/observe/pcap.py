"""A trace written as a capture Wireshark and tshark read (`farm trace --pcap`): one packet a
request and one an answer, raw IPv4 (pcap link type 101), the Modbus frames as the server's
transport carries them: MBAP over TCP (Modbus/TCP, and TLS's content unencrypted), MBAP over
UDP, RTU frames over TCP. tshark dissects them as `mbtcp`, `mbudp` and `mbrtu`, queries and
responses told apart by the server's port (502 by itself; elsewhere `-o mbtcp.tcp.port:PORT`
or `-o mbrtu.tcp.port:PORT`; tshark 4.0 dissects `-o mbudp.udp.port:PORT` but classifies UDP
queries and responses on port 502 only). A client on IPv6 is left out.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from typing import Any

from farm.modbus import mbap, rtu

LINKTYPE_RAW = 101
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


def _checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f">{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ip(source: bytes, target: bytes, protocol: int, payload: bytes, ident: int) -> bytes:
    header = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0x4000, 64, protocol, 0,
        source, target,
    )  # fmt: skip
    return header[:10] + struct.pack(">H", _checksum(header)) + header[12:] + payload


def _split(address: str) -> tuple[bytes, int] | None:
    host, _, port = address.rpartition(":")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if not isinstance(ip, ipaddress.IPv4Address):
        return None
    return ip.packed, int(port)


class _Streams:
    """Sequence numbers per direction of each connection, and MBAP transaction ids."""

    def __init__(self) -> None:
        self.sequence: dict[tuple[int, int], int] = {}
        self.transactions: dict[int, int] = {}

    def next_seq(self, key: tuple[int, int], length: int) -> int:
        seq = self.sequence.get(key, 1)
        self.sequence[key] = seq + length
        return seq

    def transaction(self, port: int) -> int:
        number = self.transactions.get(port, 0) + 1
        self.transactions[port] = number
        return number & 0xFFFF


def capture(trace: dict[str, Any], records: Iterable[dict[str, Any]]) -> bytes:
    """The pcap file of `records` (the API's trace records) of the server `trace` names."""
    server = _split(trace["address"])
    out = [_GLOBAL.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW)]
    if server is None:
        return out[0]
    server_ip, server_port = server
    transport = trace["transport"]
    streams = _Streams()
    ident = 0
    for record in records:
        client = _split(record["client"])
        if client is None:
            continue
        client_ip, client_port = client
        request, answer = bytes.fromhex(record["request"]), bytes.fromhex(record["answer"])
        unit = int(record["unit"])
        if transport == "rtu-over-tcp":
            frames = [rtu.frame(unit, request), rtu.frame(unit, answer) if answer else b""]
        else:
            transaction = streams.transaction(client_port)
            frames = [mbap.frame(transaction, unit, request)]
            frames.append(mbap.frame(transaction, unit, answer) if answer else b"")
        times = (record["time"], record["time"] + record["latency_s"])
        directions = ((client_ip, client_port, server_ip, server_port),
                      (server_ip, server_port, client_ip, client_port))  # fmt: skip
        for frame, at, (src, sport, dst, dport) in zip(frames, times, directions, strict=True):
            if not frame:
                continue
            ident += 1
            if transport == "udp":
                segment = struct.pack(">HHHH", sport, dport, 8 + len(frame), 0) + frame
                packet = _ip(src, dst, 17, segment, ident)
            else:
                seq = streams.next_seq((sport, dport), len(frame))
                ack = streams.sequence.get((dport, sport), 1)
                header = struct.pack(">HHIIBBHHH", sport, dport, seq, ack, 0x50, 0x18, 65535, 0, 0)
                packet = _ip(src, dst, 6, header + frame, ident)
            seconds = int(at)
            out.append(
                _RECORD.pack(seconds, int((at - seconds) * 1e6), len(packet), len(packet)) + packet
            )
    return b"".join(out)
