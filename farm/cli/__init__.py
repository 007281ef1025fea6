"""The `farm` command: every subcommand, a client of the master's API or a front to it.

app (the group, `status`, `down`), up (`farm up`), validate (`validate`, `plan`: what a
config would build), budget (what it would cost, checked first), sharding (the shard
options), prometheus_config, control (`servers`, `get`, `set`, `server stop|start`), faults
(`fault add|list|clear`), scenario (`scenario run|status|stop`, `scale`), targets (`farm
targets`), net (`net plan|up|down`), certs (`farm certs`; selfsigned makes the files).
    observe/   what the system under test did: writes (`farm writes`), clients (`farm
               clients`), report (`farm report`), trace (`farm trace`; pcap writes its
               capture)

Importing this package imports none of them: the `farm` console script (`from farm.cli
import main`) is the `__main__` of `farm up`, and multiprocess's spawn runs the parent's
`__main__` script again in every worker it starts. Were the commands imported here, each
worker would load click, Rich, pydantic, aiohttp and the master (about 30 MB a worker).

`farm up` is the one exception, before any of them: it starts its workers, which then boot
while it loads its API's first part and the command, and plans (`_start_early`).
"""

import contextlib
import os
import sys
from collections.abc import Iterator

from farm import collector


def main() -> None:
    """The `farm` command (the click group is farm.cli.app.main)."""
    # numpy's OpenBLAS starts a thread per core when numpy loads, which spins for a while:
    # 0.08 s of another core's CPU per process at `farm up` (master and workers inherit this),
    # a sixth of a 500-server start on 2 cores. The farm does no linear algebra.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if sys.argv[1:2] == ["up"]:
        collector.pause()  # resumed at ready (farm.master.run), in every worker too
        _start_early(sys.argv[2:])
    from farm.cli.app import main as farm_command  # here, not at the top: see the docstring

    farm_command()


def _start_early(args: list[str]) -> None:
    """`farm up`: its workers start now (farm.master.supervision.warm) and boot on the other
    cores while this process loads the first part of its API (aiohttp: farm.master.api),
    then the command, reads its options and plans, rather than after it bound its ports."""
    import importlib

    from farm.master.supervision import warm
    from farm.openfiles import EARLY_DESCRIPTORS, reserve_descriptors

    # While this process has one thread: a farm of up to some thousands of servers then
    # binds them all without the kernel stopping it to grow its descriptor table.
    reserve_descriptors(EARLY_DESCRIPTORS)
    if warm.start(args):  # none for --help, say
        with _no_ca_store():
            importlib.import_module("farm.master.api")


@contextlib.contextmanager
def _no_ca_store() -> Iterator[None]:
    """While aiohttp loads: its import builds two client TLS contexts, each reading the
    system's CA store (0.06-0.1 s of CPU, a tenth of a 500-server start). The master serves
    HTTP and is never an HTTPS client with aiohttp's default contexts: they get an empty
    store (OpenSSL reads SSL_CERT_FILE in place of the system's bundle)."""
    before = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = os.devnull
    try:
        yield
    finally:
        if before is None:
            del os.environ["SSL_CERT_FILE"]
        else:
            os.environ["SSL_CERT_FILE"] = before
