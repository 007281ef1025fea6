"""The design modbus-farm replaces: one process, one asyncio loop, one pymodbus server each.

    python3 -m benchmarks.pymodbus_farm --count 500 --port-base 15020 [--uvloop]

Built the way pymodbus 3.16 wants it (see the pymodbus notes in DESIGN.md): every
`pymodbus.server.ModbusTcpServer` is constructed inside the running loop (its constructor
calls `get_running_loop()`), started with `serve_forever(background=True)` (which returns
once it listens; `StartAsyncTcpServer` would never return), and given its own `SimDevice`
(the deprecated `ModbusServerContext` would log a warning per server) shaped like the
farm's default device: unit 1, 1000 coils, discrete inputs, holding and input registers,
in four separate blocks. Prints `ready` once every port listens; exits on SIGTERM, on end of
stdin, or after --lifetime seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from benchmarks.procs import run_until_told

TABLE_SIZE = 1000


def default_device() -> SimDevice:
    def bits() -> list[SimData]:
        return [SimData(0, count=TABLE_SIZE, values=False, datatype=DataType.BITS)]

    def registers() -> list[SimData]:
        return [SimData(0, count=TABLE_SIZE, values=0, datatype=DataType.UINT16)]

    return SimDevice(id=1, simdata=(bits(), bits(), registers(), registers()))


async def serve(host: str, port_base: int, count: int, lifetime: float) -> None:
    servers = []
    for port in range(port_base, port_base + count):
        server = ModbusTcpServer(default_device(), address=(host, port))
        await server.serve_forever(background=True)
        servers.append(server)
    await run_until_told(lifetime)
    for server in servers:
        await server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port-base", type=int, required=True)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--lifetime", type=float, default=900.0)
    parser.add_argument("--uvloop", action="store_true", help="Run on uvloop, not asyncio's loop.")
    args = parser.parse_args()
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    coroutine = serve(args.host, args.port_base, args.count, args.lifetime)
    if args.uvloop:
        import uvloop

        uvloop.run(coroutine)
    else:
        asyncio.run(coroutine)


if __name__ == "__main__":
    main()
