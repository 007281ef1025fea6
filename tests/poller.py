"""A SCADA-like poller for the observation tests: pymodbus async clients, one per device,
each reading the same registers every `interval_s` from its own source address, reconnecting
every `interval_s` when a device is gone (as a driver with a fixed retry would)."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from pymodbus.client import AsyncModbusTcpClient


@dataclass
class Poller:
    targets: list[tuple[str, int]]
    source: str  # the client's address: 127.0.0.2 is as local as 127.0.0.1 and tells it apart
    interval_s: float = 0.2
    stopping: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    polls: int = 0
    failures: int = 0

    def __enter__(self) -> Poller:
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        assert self.thread is not None
        self.thread.join(10)

    async def _run(self) -> None:
        await asyncio.gather(*(self._poll(host, port) for host, port in self.targets))

    async def _poll(self, host: str, port: int) -> None:
        client = AsyncModbusTcpClient(
            host,
            port=port,
            timeout=1,
            retries=0,
            reconnect_delay=0,
            source_address=(self.source, 0),
        )
        due = time.monotonic()
        try:
            while not self.stopping.is_set():
                try:
                    if not client.connected:
                        await client.connect()
                    if client.connected:
                        answer = await client.read_holding_registers(0, count=4, device_id=1)
                        self.polls += not answer.isError()
                    else:
                        self.failures += 1
                except Exception:  # the device went away: try again at the next tick
                    self.failures += 1
                    client.close()
                due += self.interval_s
                await asyncio.sleep(max(0.0, due - time.monotonic()))
        finally:
            client.close()
