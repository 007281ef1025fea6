"""A connection flood, as its own process: `python -m tests.flood HOST PORT COUNT SOURCE SECONDS`.

Opens COUNT connections to HOST:PORT from the address SOURCE (a 127.x.y.z of its own, so two
floods do not share one address's ephemeral ports), at most `PENDING` handshakes at a
time, and prints one JSON line: how many connected and how many failed to connect. It
keeps every socket until its stdin closes, then prints a second line: how many of them the
server had closed (EOF or reset). Bounded by COUNT and SECONDS (for the connecting, and
again for the waiting); raises its own open-files limit to the hard one first.
"""

from __future__ import annotations

import errno
import json
import resource
import selectors
import socket
import sys
import time

PENDING = 256
IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h: pick the port at connect, per destination


def flood(host: str, port: int, count: int, source: str, seconds: float) -> dict[str, int]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    selector = selectors.DefaultSelector()
    deadline = time.monotonic() + seconds
    started = connected = failed = closed = 0
    pending: set[socket.socket] = set()
    held: list[socket.socket] = []
    while time.monotonic() < deadline and (started < count or pending):
        while started < count and len(pending) < PENDING:
            sock = socket.socket()
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
            sock.setblocking(False)
            code = sock.connect_ex((host, port))
            started += 1
            if code not in (0, errno.EINPROGRESS):
                failed += 1
                sock.close()
                continue
            pending.add(sock)
            selector.register(sock, selectors.EVENT_WRITE)
        for key, _ in selector.select(timeout=0.2):
            sock = key.fileobj  # type: ignore[assignment]
            selector.unregister(sock)
            pending.discard(sock)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                failed += 1
                sock.close()
            else:
                connected += 1
                held.append(sock)
    for sock in pending:
        sock.close()
    failed += len(pending)
    print(json.dumps({"started": started, "connected": connected, "failed": failed}), flush=True)
    readable = selectors.DefaultSelector()
    readable.register(sys.stdin, selectors.EVENT_READ)
    readable.select(timeout=seconds)  # until the test has looked at the server's side
    for sock in held:  # what the server did with them: closed (EOF/reset) or kept
        try:
            if sock.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        sock.close()
    return {"closed": closed, "held": len(held)}


if __name__ == "__main__":
    host, port, count, source, seconds = sys.argv[1:6]
    result = flood(host, int(port), int(count), source, float(seconds))
    print(json.dumps(result), flush=True)
