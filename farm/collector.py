"""Python's cyclic garbage collector around a start, for `farm up`'s master and its workers.

Loading the farm's modules and building its servers make objects by the tens of thousands
and free next to none, and the collector, which runs on every 700 new objects, traverses
them again and again meanwhile for nothing: 0.06 s of the master's CPU at a 500-server
start, 15 % of it (measured: 0.40-0.47 s with it on, 0.35-0.37 s off, loading what the
master loads before it binds). So `farm up` starts with it off (`pause`, in farm.cli), its
workers inherit that when forked, and each process turns it back on once ready (`resume`).

What is alive then (modules, the plan, the servers) mostly lives as long as the farm:
`resume` freezes it first (gc.freeze), so that later collections skip it. Without that, the
first full collection after ready would traverse all of it at once, on the loop (a
master's 96,000 start-up objects: 0.03 s). The price, bounded by what the start built: the
few unreachable cycles the start left (about 1,700 objects, measured) are kept, and so is
any object of then that later ends up in an unreachable cycle (a server stopped for good,
say), once; whatever is made after ready is collected as ever.
"""

from __future__ import annotations

import gc


def pause() -> None:
    """Turn the collector off for a start (a forked child inherits it off)."""
    gc.disable()


def resume() -> None:
    """Turn the collector back on, past what the start left (frozen: never traversed)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
