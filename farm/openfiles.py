"""The open-files limit, raised the same way by every program of the package.

A farm holds a socket per server (the master all of them, each worker its shard's) and the
load generator one per connection: far more than the usual soft limit of 1,024. Each
program raises its soft limit to the hard one as it starts (the master before it binds, a
worker and a generator process when spawned); the hard limit is the machine's to set.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource

EARLY_DESCRIPTORS = 4096  # `farm up`'s table before its first thread: 32 KiB of the kernel's


def raise_open_files_limit() -> int | None:
    """Raise this process's soft limit on open files to its hard limit; return that limit
    (None: there is none)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return None if hard == resource.RLIM_INFINITY else hard


def reserve_descriptors(count: int) -> None:
    """Grow this process's descriptor table to hold `count` descriptors now, in one step
    (the open-files limit raised first: the table holds no more than it allows).

    The kernel grows the table on demand, doubling it. In a process with more than one
    thread each growth waits for an RCU grace period (synchronize_rcu in expand_fdtable):
    5-20 ms here, during which the thread that opened the descriptor stands still. A master
    binding 10,000 sockets after its log thread started paid it eight times. Grown at once
    it is paid at most once, and not at all while the process has a single thread. Where it
    cannot be grown now (every descriptor up to the limit in use), it grows on demand as
    before: nothing fails here."""
    limit = raise_open_files_limit()
    highest = count - 1 if limit is None else min(count, limit) - 1
    if highest < 64:  # the table's first size: nothing to grow
        return
    with contextlib.suppress(OSError):
        source = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # The lowest free descriptor from `highest` on: never one that is in use.
            os.close(fcntl.fcntl(source, fcntl.F_DUPFD_CLOEXEC, highest))
        finally:
            os.close(source)
