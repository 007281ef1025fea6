"""Worker entry points that misbehave on purpose, for supervisor tests.

A Supervisor spawns its workers by entry-point name (`Supervisor(..., entry=...)`), so a
test can hand it one of these: each runs in a real spawned process, as a worker would.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from farm.ipc.messages import Connection

LINGER_S = 3.0


def crash_at_once(conn: Connection, sockets: dict[int, socket.socket]) -> None:
    """Die before saying Ready: a worker that fails to boot (not "could not boot")."""
    sys.exit(1)


def close_fds_and_linger(conn: Connection, sockets: dict[int, socket.socket]) -> None:
    """Close every inherited descriptor, the end of the master's sentinel pipe among them,
    then stay alive a while: the master sees the sentinel close long before it can reap."""
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    time.sleep(LINGER_S)
    os._exit(1)


def send_frame_and_linger(conn: Connection, sockets: dict[int, socket.socket]) -> None:
    """Send the master one frame, the bytes of the file `FARM_TEST_FRAME` names, and linger."""
    with open(os.environ["FARM_TEST_FRAME"], "rb") as frame:
        conn.send_bytes(frame.read())
    time.sleep(LINGER_S)
    os._exit(1)


PIPE_DELAY_S = 0.2  # how long a slow worker takes over each message of the master


def slow_pipe(conn: Connection, sockets: dict[int, socket.socket]) -> None:
    """A real worker on a loaded box: each message from the master is read `PIPE_DELAY_S`
    late, so stops, starts and faults are confirmed late, in order."""
    from farm.ipc.messages import Message
    from farm.worker import process

    read = process.Worker._on_pipe

    def late(worker: process.Worker, message: Message, socks: list[socket.socket]) -> None:
        time.sleep(PIPE_DELAY_S)
        read(worker, message, socks)

    process.Worker._on_pipe = late  # type: ignore[method-assign,assignment]
    process.run(conn, sockets)


def garble_after_ready(conn: Connection, sockets: dict[int, socket.socket]) -> None:
    """A real worker whose first heartbeat is preceded by a frame of pipe version 99 (as a
    worker of another release would write)."""
    from farm.ipc.messages import LENGTH, Heartbeat, Message
    from farm.worker import process

    send = process.Worker.send

    def garbling(worker: process.Worker, message: Message) -> None:
        if isinstance(message, Heartbeat):
            worker.channel.sock.send(LENGTH.pack(2) + bytes([99, 0]))
        send(worker, message)

    process.Worker.send = garbling  # type: ignore[method-assign,assignment]
    process.run(conn, sockets)


def collector_paused(conn: Connection, sockets: dict[int, socket.socket]) -> None:
    """A real worker started with Python's collector off, as a warm worker is forked from
    `farm up` (farm.collector): at its first heartbeat after Ready it writes whether the
    collector is on and how many objects it froze, to `FARM_TEST_COLLECTOR`.PID."""
    import gc

    from farm.ipc.messages import Heartbeat, Message, Ready
    from farm.worker import process

    send = process.Worker.send
    said_ready = False

    def reporting(worker: process.Worker, message: Message) -> None:
        nonlocal said_ready
        if isinstance(message, Heartbeat) and said_ready:
            path = f"{os.environ['FARM_TEST_COLLECTOR']}.{os.getpid()}"
            with open(path + ".part", "w") as report:
                report.write(f"{gc.isenabled()} {gc.get_freeze_count()}")
            os.replace(path + ".part", path)
        said_ready = said_ready or isinstance(message, Ready)
        send(worker, message)

    gc.disable()
    process.Worker.send = reporting  # type: ignore[method-assign,assignment]
    process.run(conn, sockets)
