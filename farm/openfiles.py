"""The open-files limit, raised the same way by every program of the package.

A farm holds a socket per server (the master all of them, each worker its shard's) and the
load generator one per connection: far more than the usual soft limit of 1,024. Each
program raises its soft limit to the hard one as it starts (the master before it binds, a
worker and a generator process when spawned); the hard limit is the machine's to set.
"""

from __future__ import annotations

import resource


def raise_open_files_limit() -> int | None:
    """Raise this process's soft limit on open files to its hard limit; return that limit
    (None: there is none)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return None if hard == resource.RLIM_INFINITY else hard
