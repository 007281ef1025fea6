"""How the master starts a worker: its entry point by name, its listening sockets by descriptor.

The master names the worker's entry point as a string (as gunicorn names its worker class),
so the master never loads the worker's modules (and pymodbus with them); the spawned child
imports it. Both sides share the exit code that means "could not boot: do not restart me".
"""

from __future__ import annotations

import importlib
import socket
from typing import Any

from multiprocess import context

WORKER_ENTRY = "farm.worker.process:run"
EXIT_BOOT_FAILED = 3  # the master does not restart a worker that exits with this
EXIT_PIPE_ERROR = 4  # the master's pipe was garbled (a version mismatch, say): a failure
# Descriptors a worker keeps for itself besides its listening sockets: the pipe, epoll, the
# shared-memory segments, stdio, /proc reads, and the one an `accept` takes to refuse a client.
FILES_RESERVED = 64


NO_LIMIT_CAP = 1 << 20  # connections a worker may hold when open files are unlimited


def connection_cap(open_files: int | None, listening: int) -> int:
    """Client connections a worker may hold with this open-files limit (None: unlimited,
    farm.openfiles) and these listeners.

    Both sides need it: the worker enforces it (farm.worker.limits.guard), the master says at start
    how many connections fit.
    """
    if open_files is None:
        return NO_LIMIT_CAP
    return max(0, open_files - listening - FILES_RESERVED)


def run_entry(entry: str, *args: Any) -> None:
    """Import `module:function` in this (spawned) process and call it with `args`."""
    module, _, function = entry.partition(":")
    getattr(importlib.import_module(module), function)(*args)


class InheritedSockets:
    """A shard's listening sockets on their way to a spawned worker, as bare descriptors.

    Handed to the worker as a Process argument. Pickling thousands of socket objects through
    multiprocess (dill's pure-Python pickler) left ~4.6 MB of heap the master never got back,
    at every spawn; here each descriptor is registered with the spawning process directly (it
    reaches the child under the same number) and only a tuple of ints is pickled. The child
    unpickles a dict from server index to socket.
    """

    def __init__(self, sockets: tuple[tuple[int, socket.socket], ...]) -> None:
        self.sockets = sockets

    def __reduce__(self) -> tuple[object, tuple[tuple[int, ...], tuple[int, ...]]]:
        popen = context.get_spawning_popen()
        if popen is None:
            raise RuntimeError("listening sockets travel only to a worker being spawned")
        indices = tuple(index for index, _ in self.sockets)
        fds = tuple(popen.duplicate_for_child(sock.fileno()) for _, sock in self.sockets)
        return _adopt, (indices, fds)


def _adopt(indices: tuple[int, ...], fds: tuple[int, ...]) -> dict[int, socket.socket]:
    """In the worker: the inherited descriptors as sockets, by server index."""
    return {index: socket.socket(fileno=fd) for index, fd in zip(indices, fds, strict=True)}
