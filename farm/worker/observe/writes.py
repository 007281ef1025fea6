"""The write journal's worker side: every write a client makes, recorded in the server's
journal (farm.ipc.journal) with who made it.

Part of the engine (... engine -> fastpath -> bank's journal hook -> writes -> journal): a
device with a journal sets a `JournalWrites` as the `journal` hook of each of its banks; the
write handlers (farm.worker.fastpath, and `UnitContext` for FC 22 and 23) call it with the
values before and after, only when a write succeeded; FC 21 (farm.worker.records) calls
`file_written`. Reads never come here.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from farm.config.templates import Table
from farm.ipc.journal import FILE_RECORDS, Peer, ServerJournal

if TYPE_CHECKING:
    from farm.worker.engine import Device

UNKNOWN = Peer(bytes(16), 0, 1)  # a write from no connection (a device driven in process)


class JournalWrites:
    """A device's banks' journal hook."""

    __slots__ = ("device", "journal")

    def __init__(self, journal: ServerJournal, device: Device) -> None:
        self.journal = journal
        self.device = device  # its `caller` is who sent the request being answered

    def __call__(
        self, unit: int, function_code: int, table: Table, address: int, before: bytes, after: bytes
    ) -> None:
        caller = self.device.caller
        peer = caller.peer() if caller is not None else UNKNOWN
        self.journal.record(
            peer, unit, function_code, table, address, after, before, time.time_ns(),
            time.monotonic_ns(),
        )  # fmt: skip

    def file_written(
        self, unit: int, number: int, record: int, before: bytes, after: bytes
    ) -> None:
        """FC 21's hook (farm.worker.records): records `record`.. of file `number` written."""
        caller = self.device.caller
        peer = caller.peer() if caller is not None else UNKNOWN
        self.journal.record(
            peer, unit, 21, FILE_RECORDS, record, after, before, time.time_ns(),
            time.monotonic_ns(), file=number,
        )  # fmt: skip
