"""The practical ceiling: a minimal uvloop Modbus TCP responder, one process, FC 3 only.

    python3 -m benchmarks.responder --count 500 --port-base 15020

Every server answers Read Holding Registers from one shared 1000-register bytearray (any
other function code gets exception 01); frames pipelined in one read are all answered. No
validation beyond that, no counters, no banks per device: what is left is the cost of the
event loop, the syscalls and MBAP framing, the least a Python server can pay per request.
Prints `ready` once every port listens; exits on SIGTERM, on end of stdin, or after
--lifetime seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import struct

import uvloop

from benchmarks.procs import run_until_told

REGISTERS = bytearray(2000)
HEADER = struct.Struct(">HHHB")


class Responder(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        data = self.buffer + data if self.buffer else data
        out, pos = [], 0
        while len(data) - pos >= 12:
            tid, _, length, unit = HEADER.unpack_from(data, pos)
            if data[pos + 7] == 3:
                address, count = struct.unpack_from(">HH", data, pos + 8)
                body = REGISTERS[2 * address : 2 * (address + count)]
                out.append(HEADER.pack(tid, 0, len(body) + 3, unit) + bytes((3, len(body))) + body)
            else:
                out.append(HEADER.pack(tid, 0, 3, unit) + bytes((data[pos + 7] | 0x80, 1)))
            pos += 6 + length
        self.buffer = data[pos:]
        self.transport.write(b"".join(out))


async def serve(host: str, port_base: int, count: int, lifetime: float) -> None:
    loop = asyncio.get_running_loop()
    for port in range(port_base, port_base + count):
        await loop.create_server(Responder, host, port, backlog=256)
    await run_until_told(lifetime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port-base", type=int, required=True)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--lifetime", type=float, default=900.0)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port_base, args.count, args.lifetime))


if __name__ == "__main__":
    main()
