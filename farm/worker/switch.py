"""A worker's servers going up and down: every listener started at boot, and servers stopped
and started again on the master's `Control` (STOP_SERVER, START_SERVER: an offline or reboot
fault, `farm servers stop/start`).

Beside the worker's process (farm.master.fleet.switch -> Control -> process -> here), as
farm.worker.membership is for servers joining and leaving. A stopped server's listening
socket and connections are closed; its device, values and counters stay, and START_SERVER
serves it again on the socket that comes with the message.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import TYPE_CHECKING

from farm.ipc.messages import Control, ServerFailed
from farm.worker.transports.serving import Transports

if TYPE_CHECKING:
    from farm.worker.process import Worker

BATCH = 250  # servers started between two yields to the loop (heartbeats keep flowing)


async def start_all(worker: Worker) -> tuple[ServerFailed, ...]:
    """Serve the shard's servers on the sockets the worker was spawned with; the ones that
    fail to start are reported, one `ServerFailed` each, and the others carry on."""
    worker.transports = transports = Transports(worker, worker.count_tls_role)
    failed = []
    for started, spec in enumerate(worker.assign.servers):
        number = spec.stats_index
        sock = worker.sockets.pop(spec.index, None)
        if sock is None:
            continue  # stopped by the master, or started already by a Control
        try:
            server = await transports.start(spec, number, sock)
        except (OSError, ssl.SSLError) as exc:
            failure = ServerFailed(
                worker=worker.assign.worker,
                server=spec.name,
                address=spec.address,
                reason=str(exc),
            )
            worker.send(failure)
            failed.append(failure)
            continue
        worker.keep(number, server)
        if started % BATCH == BATCH - 1:
            await asyncio.sleep(0)
    return tuple(failed)


def stop(worker: Worker, message: Control) -> None:
    """Close the servers' listening sockets and their connections, in one pass (the
    master closed its copies)."""
    unknown = [name for name in message.servers if name not in worker.numbers]
    names = set(message.servers) - set(unknown)
    for name in names:
        number = worker.numbers[name]
        worker.stopped.add(number)
        server = worker.servers.pop(number, None)
        if server is not None:
            server.close()
        else:  # not started yet: the socket waits in the inherited ones
            sock = worker.sockets.pop(worker.specs[number].index, None)
            if sock is not None:
                sock.close()
    if worker.connections is not None:
        worker.connections.close_all(servers=names)
    worker.reply(message, error=f"no server {unknown[0]!r} here" if unknown else "")


async def start(worker: Worker, message: Control, socks: list[socket.socket]) -> None:
    """Serve stopped servers again on the sockets that came with `message`, in order."""
    errors = []
    for started, (name, sock) in enumerate(zip(message.servers, socks, strict=True)):
        error = await _start_one(worker, name, sock)
        if error:
            errors.append(error)
        if started % BATCH == BATCH - 1:
            await asyncio.sleep(0)  # heartbeats and requests keep flowing
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    worker.reply(message, error=f"{errors[0]}{more}" if errors else "")


async def _start_one(worker: Worker, name: str, sock: socket.socket) -> str:
    """Serve one server on `sock`; returns why not ("" when it serves, or did already)."""
    number = worker.numbers.get(name)
    if number is None or number in worker.servers:
        sock.close()  # unknown here, or serving already: the master's copy stays
        return "" if number is not None else f"no server {name!r} here"
    worker.stopped.discard(number)
    device = worker.devices.get(number)
    if device is not None:  # after a reboot fault the master powered its diagnostics up
        device.diagnostics.reload()
    assert worker.transports is not None, "servers start before any Control is read"
    try:
        server = await worker.transports.start(worker.specs[number], number, sock)
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        return f"cannot serve {name}: {exc}"
    worker.keep(number, server)
    return ""
