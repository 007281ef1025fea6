"""Register banks: the four Modbus tables of every unit, in shared memory the master owns.

Sits under the engine in the data flow (... worker -> engine -> banks). The master creates
one segment per shard before it spawns the shard's worker, and unlinks it when the farm
stops; a worker attaches by name. Because the master owns the memory, a worker that is
killed and restarted finds every value a client wrote.

Layout of a segment (offsets come from farm.config.plan, so both sides agree without talking):
blocks at fixed offsets, each for the slots of one template (a server at the slot its spec
names: its place never moves when others join or leave). A block is table-major, each
server's table contiguous, where a bit takes one byte (0 or 1) and a register two bytes,
big-endian as on the wire, so a read of registers is one slice copy. After the tables of a
block come each slot's diagnostics block (farm.ipc.diagnostics) and file records (FC
20/21): device state a restart keeps too.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from multiprocess import shared_memory

from farm.config.plan import (
    DIAGNOSTICS_BYTES,
    TABLE_ORDER,
    ServerSpec,
    diagnostics_offset,
    file_offset,
    table_bytes,
    table_offset,
)
from farm.config.templates import DeviceTemplate, Table


def segment_file(name: str) -> str:
    """Where Linux keeps the shared-memory segment `name` (shm_open's files live in /dev/shm):
    the state file reads and writes banks through it, and the owner grows a segment there."""
    return f"/dev/shm/{name.lstrip('/')}"


class Segment:
    """A shared-memory segment; `create` in the master, `attach` in a worker."""

    def __init__(self, shm: shared_memory.SharedMemory, owner: bool) -> None:
        self._shm = shm
        self._owner = owner
        self.buf: memoryview = shm.buf
        # Mappings from before the segment grew: views made on them (a device's banks) stay
        # valid, on the same pages, so they stay mapped until the segment closes.
        self._earlier: list[shared_memory.SharedMemory] = []

    @classmethod
    def create(cls, size: int) -> Segment:
        return cls(shared_memory.SharedMemory(create=True, size=size), owner=True)

    @classmethod
    def attach(cls, name: str) -> Segment:
        return cls(shared_memory.SharedMemory(name=name), owner=False)

    @property
    def name(self) -> str:
        return str(self._shm.name)

    def unmap(self) -> None:
        """Drop this process's mapping but keep the segment (and the right to unlink it).

        The master writes starting values and then unmaps: pages it touched would otherwise
        count in its RSS as well as in the workers'.
        """
        self.buf.release()
        # A bank view may still be alive (an API request in flight): the mapping then goes
        # with the process, and unlinking still frees the memory afterwards.
        with contextlib.suppress(BufferError):
            self._shm.close()

    def remap(self) -> None:
        """Map the segment afresh: the pages touched so far leave this process's RSS.

        The master writes starting values, then remaps: it keeps a view for the control
        API (which reads and writes values in place) without paying for every page it
        initialised; a page joins its RSS again only when a request touches it.
        """
        self.unmap()
        self._shm = shared_memory.SharedMemory(name=self.name)
        self.buf = self._shm.buf

    def grow(self, size: int) -> None:
        """The owner makes the segment `size` bytes long (never shorter), mapped afresh.

        Bytes stay where they are (an ftruncate), so every view on the old mapping still
        sees the same memory; new pages are zero. The other processes `refresh`.
        """
        if size > len(self.buf):
            # SharedMemory keeps its descriptor private (and drops it at close); on Linux the
            # segment is the file shm_open made in /dev/shm, which any owner may truncate.
            os.truncate(segment_file(self.name), size)
            self.refresh()

    def refresh(self) -> None:
        """Map the segment at its current size, if it grew; earlier views stay valid."""
        fresh = shared_memory.SharedMemory(name=self.name)
        if len(fresh.buf) <= len(self.buf):
            fresh.close()
            return
        self._earlier.append(self._shm)
        self._shm, self.buf = fresh, fresh.buf

    def close(self) -> None:
        """Drop this process's mapping; the owner also removes the segment."""
        for earlier in self._earlier:
            with contextlib.suppress(BufferError):
                earlier.close()
        self.unmap()
        if self._owner:
            with contextlib.suppress(FileNotFoundError):  # someone cleaned /dev/shm already
                self._shm.unlink()


@dataclass(slots=True)
class UnitBank:
    """Views on one unit's four tables."""

    unit_id: int
    coils: memoryview
    discrete_inputs: memoryview
    holding_registers: memoryview
    input_registers: memoryview
    # 1 marks an address clients may not write (a read-only point); None: all writable.
    # Shared by every server of a template.
    read_only_coils: bytes | None = None
    read_only_holding: bytes | None = None
    # Called by every write a client makes, (unit id, function code, table, address, values
    # before, values after) in bank layout: the write journal (farm.worker.observe.writes).
    # None: no journal, and writes pay one attribute check.
    journal: Callable[[int, int, Table, int, bytes, bytes], None] | None = None

    def view(self, table: Table) -> memoryview:
        view: memoryview = getattr(self, table.value)
        return view

    def size(self, table: Table) -> int:
        view = self.view(table)
        return len(view) if table.is_bits else len(view) // 2

    def read_bits(self, table: Table, address: int, count: int) -> list[bool]:
        return [bool(b) for b in self.view(table)[address : address + count]]

    def write_bits(self, table: Table, address: int, values: list[bool]) -> None:
        self.view(table)[address : address + len(values)] = bytes(1 if v else 0 for v in values)

    def read_registers(self, table: Table, address: int, count: int) -> list[int]:
        return list(struct.unpack_from(f">{count}H", self.view(table), 2 * address))

    def write_registers(self, table: Table, address: int, values: list[int]) -> None:
        struct.pack_into(f">{len(values)}H", self.view(table), 2 * address, *values)

    def in_range(self, table: Table, address: int, count: int) -> bool:
        return address >= 0 and count >= 0 and address + count <= self.size(table)

    def writable(self, table: Table, address: int, count: int) -> bool:
        """False when the range holds a read-only point (clients then get exception 02)."""
        mask = self.read_only_coils if table is Table.COILS else self.read_only_holding
        return mask is None or mask.find(1, address, address + count) == -1


ReadOnlyMasks = dict[int, tuple[bytes | None, bytes | None]]


def read_only_masks(template: DeviceTemplate) -> ReadOnlyMasks:
    """Per unit: (coils mask, holding mask) marking read-only points; computed per template."""
    masks: ReadOnlyMasks = {}
    for unit in template.units:
        coils = bytearray(unit.coils)
        holding = bytearray(unit.holding_registers)
        for point in template.points:
            if point.unit_id != unit.unit_id or point.writable:
                continue
            if point.table is Table.COILS:
                coils[point.address : point.address + point.width] = b"\1" * point.width
            elif point.table is Table.HOLDING_REGISTERS:
                holding[point.address : point.address + point.width] = b"\1" * point.width
        masks[unit.unit_id] = (
            bytes(coils) if any(coils) else None,
            bytes(holding) if any(holding) else None,
        )
    return masks


def server_banks(
    buf: memoryview,
    spec: ServerSpec,
    template: DeviceTemplate,
    masks: ReadOnlyMasks | None = None,
) -> dict[int, UnitBank]:
    """The banks of one server, as views on its shard's segment."""
    banks: dict[int, UnitBank] = {}
    for unit in template.units:
        views: dict[str, memoryview] = {}
        for table in TABLE_ORDER:
            start = table_offset(spec, template, unit.unit_id, table)
            views[table.value] = buf[start : start + table_bytes(unit, table)]
        coils_mask, holding_mask = (masks or {}).get(unit.unit_id, (None, None))
        banks[unit.unit_id] = UnitBank(
            unit_id=unit.unit_id,
            read_only_coils=coils_mask,
            read_only_holding=holding_mask,
            coils=views["coils"],
            discrete_inputs=views["discrete_inputs"],
            holding_registers=views["holding_registers"],
            input_registers=views["input_registers"],
        )
    return banks


def server_diagnostics(buf: memoryview, spec: ServerSpec, template: DeviceTemplate) -> memoryview:
    """A server's diagnostics block (laid out by farm.ipc.diagnostics)."""
    start = diagnostics_offset(spec, template)
    return buf[start : start + DIAGNOSTICS_BYTES]


def server_files(
    buf: memoryview, spec: ServerSpec, template: DeviceTemplate
) -> dict[int, memoryview]:
    """A server's files (FC 20/21) by number: two bytes a record, big-endian as on the wire."""
    files = {}
    for file in template.files:
        start = file_offset(spec, template, file.number)
        files[file.number] = buf[start : start + 2 * file.records]
    return files
