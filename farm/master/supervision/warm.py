"""Warm workers: worker processes started first thing in `farm up`, before its options are
read, its fleet planned and its ports bound, so that a worker's boot (loading its modules:
about 0.1 s of CPU) overlaps the master's own instead of following it. They are forked from
a master that has loaded next to nothing yet (`start`).

farm.cli starts them (`start`, from the command line alone: `--workers N`, else the CPUs
this process may run on); the supervisor takes one for each slot's first process (`take`)
and sends it its Assign, then its listening sockets over the pipe (`Listeners`), since a
process started before they were bound cannot inherit them; those nobody took are ended
once every slot has its process (`discard`), and at exit in any case. A worker that dies
or restarts later is spawned (a fresh interpreter: the master has threads and a loop by then),
its sockets inherited.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

MAX_WARM = 64  # never more, whatever --workers says (the plan checks the number itself)


@dataclass(frozen=True, slots=True)
class Warm:
    process: Any  # a started multiprocess Process (farm.master.supervision.slot.WorkerProcess)
    ours: Any  # the master's end of its pipe (a multiprocess Connection)


_waiting: list[Warm] = []


def wanted(argv: Sequence[str]) -> int:
    """How many workers `farm up ARGV` will most likely run: 0 when it will not start a farm
    (--help) or the number is not one (the command then says why)."""
    if "--help" in argv or "-h" in argv:
        return 0
    for number, arg in enumerate(argv):
        if arg == "--workers" or arg.startswith("--workers="):
            value = arg.partition("=")[2] if "=" in arg else "".join(argv[number + 1 : number + 2])
            return min(int(value), MAX_WARM) if value.isdigit() else 0
    return min(len(os.sched_getaffinity(0)) or 1, MAX_WARM)


def start(argv: Sequence[str]) -> int:
    """Start the workers `farm up ARGV` will most likely need (they wait for their Assign);
    how many."""
    count = wanted(argv)
    if not count:
        return 0
    import multiprocess  # here: `farm` commands other than `up` never load it
    import multiprocess.resource_tracker
    import multiprocess.util  # registers its exit function, which joins every child

    # Forked, not spawned: this process has loaded next to nothing yet (no thread, socket,
    # loop or library state to inherit), and a fork skips the interpreter's start and
    # multiprocess's unpickling in each worker (0.15 -> 0.09 s of CPU a worker). A worker
    # restarted later is spawned (farm.master.supervision.processes).
    context = multiprocess.get_context("fork")
    cpus = os.sched_getaffinity(0)
    with _on(aside(cpus, count)):  # what is started here boots there (see `aside`)
        # The resource tracker the workers' shared-memory mappings register with: started
        # now so that they inherit it, as a spawned worker is handed it.
        multiprocess.resource_tracker.ensure_running()
        # Registered after multiprocess's: runs before it, which would wait forever for a
        # warm worker whose pipe is still open (a worker ignores SIGTERM, waits for its
        # Assign).
        atexit.register(discard_now)
        for number in range(count):
            ours, theirs = context.Pipe(duplex=True)
            # The master's ends of every pipe so far, this one's included: the worker closes
            # its copies, or a master's death would never reach a worker as the end of its
            # pipe.
            masters = [warm.ours for warm in _waiting] + [ours]
            process = context.Process(
                target=_boot,
                args=(theirs, masters, cpus),
                name=f"farm-worker-{number}",
                daemon=True,
            )
            process.start()
            theirs.close()
            _waiting.append(Warm(process, ours))
    return count


def aside(cpus: set[int], workers: int) -> set[int] | None:
    """The CPUs warm workers and the resource tracker boot on: all of `cpus` but the lowest,
    which the master then has to itself; None (no change) on one CPU, or when more than two
    workers would boot on each CPU left, and queue there for longer than the master takes.

    On 2 cores, four processes (the master, two workers, the tracker) used to share both
    while the master loaded its modules: these took 0.34-0.37 s of its CPU and 0.40-0.48 s
    of wall time. With the others on the second core, the wall time is the CPU time. A
    worker is back on every CPU of the master's once it has booted (`_boot`); the tracker,
    which wakes only when a segment is made or removed, stays where it started."""
    if len(cpus) < 2 or workers > 2 * (len(cpus) - 1):
        return None
    return cpus - {min(cpus)}


@contextlib.contextmanager
def _on(cpus: set[int] | None) -> Iterator[None]:
    """This process on `cpus` meanwhile (None: as it is), so that what it starts inherits
    them; it has one thread here, so the whole of it."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _boot(theirs: Any, masters: list[Any], cpus: set[int]) -> None:
    """A forked warm worker's entry: it keeps only its own end of its pipe, loads its
    modules (its boot), then moves to every CPU of the master's (`aside`) and waits for its
    Assign."""
    from farm.ipc.spawn import WORKER_ENTRY, run_entry

    for conn in masters:
        conn.close()
    importlib.import_module(WORKER_ENTRY.partition(":")[0])
    with contextlib.suppress(OSError):  # a CPU taken from this process meanwhile, say
        os.sched_setaffinity(0, cpus)
    run_entry(WORKER_ENTRY, theirs, None)


def take() -> Warm | None:
    """A warm worker still alive, if one is left (it is the caller's from now on)."""
    while _waiting:
        warm = _waiting.pop(0)
        if warm.process.is_alive():
            return warm
        _end(warm)
    return None


def discard() -> list[Warm]:
    """Those nobody took, their pipes closed: each exits at once (the end of its pipe before
    any Assign); the caller reaps them (`process.join`, off its loop)."""
    left = list(_waiting)
    _waiting.clear()
    for warm in left:
        _end(warm)
    return left


def discard_now() -> None:
    """At exit: whatever is left ends, and is reaped here."""
    for warm in discard():
        warm.process.join(5.0)


def _end(warm: Warm) -> None:
    warm.ours.close()
    with contextlib.suppress(OSError, ValueError, AttributeError):
        warm.process.kill()  # ours, by PID; it may be importing still, deaf to its pipe
