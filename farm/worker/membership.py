"""Servers joining and leaving a running worker's shard (a fleet scaled up or down).

Beside the worker's process (farm.master.fleet.scale -> AddServers / RemoveServers -> here). The
master has placed the newcomers in the shard's memory (farm.config.plan.add_servers: free
slots of their template, or a block appended at the end), grown the two segments and
written the newcomers' starting values; this worker maps the segments again at their new
size (earlier views stay valid: the same pages), learns the newcomers, rebuilds its ticker
and serves each on the listening socket that came with the message. A server that leaves
has its port closed, its connections dropped and its device forgotten. The others are not
touched: their listeners, connections, devices and counters stay as they are.
"""

from __future__ import annotations

import socket
import ssl
from typing import TYPE_CHECKING

from farm.ipc.messages import AddServers, RemoveServers, Reply, ServerFailed

if TYPE_CHECKING:
    from farm.worker.process import Worker


async def add(worker: Worker, message: AddServers, socks: list[socket.socket]) -> None:
    """Serve the newcomers; one Reply when all are listening (or have failed)."""
    assert worker.segment is not None and worker.transports is not None
    worker.segment.refresh()
    if worker.counters is not None:
        worker.counters.refresh()
    if worker.journal is not None:
        worker.journal.refresh()
    worker.assign.templates.update(message.templates)
    for spec in message.servers:
        worker.specs[spec.stats_index] = spec
        worker.numbers[spec.name] = spec.stats_index
        worker.stopped.discard(spec.stats_index)
    worker.recap()
    _retick(worker)
    errors = []
    for spec, sock in zip(message.servers, socks, strict=True):
        try:
            server = await worker.transports.start(spec, spec.stats_index, sock)
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            errors.append(f"{spec.name}: {exc}")
            worker.send(
                ServerFailed(
                    worker=worker.assign.worker,
                    server=spec.name,
                    address=spec.address,
                    reason=str(exc),
                )
            )
            continue
        worker.keep(spec.stats_index, server)
    worker.send(
        Reply(
            request_id=message.request_id,
            ok=not errors,
            result=len(worker.servers),
            error="; ".join(errors[:3]),
        )
    )


def remove(worker: Worker, message: RemoveServers) -> None:
    """Close the leavers' ports and connections and forget them; one Reply."""
    leaving = {worker.numbers.pop(name) for name in message.servers if name in worker.numbers}
    for number in leaving:
        spec = worker.specs.pop(number)
        listener = worker.servers.pop(number, None)
        if listener is not None:
            listener.close()
        inherited = worker.sockets.pop(spec.index, None)
        if inherited is not None:
            inherited.close()
        worker.stopped.discard(number)
        worker.devices.pop(number, None)
    if worker.connections is not None:
        worker.connections.forget(set(message.servers))
    worker.recap()
    _retick(worker)
    worker.send(Reply(request_id=message.request_id, ok=True, result=len(worker.servers)))


def _retick(worker: Worker) -> None:
    """A ticker over the servers the shard has now, on the segment as it is mapped now.

    Each group keeps its schedule, so a counter does not step twice because of the change.
    """
    from farm.worker.ticker import ticker_over  # numpy: loaded after the worker's boot

    assert worker.segment is not None
    worker.ticker = ticker_over(
        worker.segment.buf, worker.assign.origin, worker.tick_list(), worker.ticker
    )
