"""How a fleet grows and shrinks: its next names and addresses, and how many it can hold.

Pure data (farm.config; no pydantic: the plan, which workers load, names it). The plan
lays out the servers a farm starts with; a `FleetSpec` remembers how each fleet made them,
so `farm scale FLEET N` (farm.master.fleet.scale) and a scenario's scale step give new servers
the fleet's next names and addresses, exactly as if the config had asked for N from the
start, and a scenario can be checked against the fleet's address range
(farm.config.scenario.check).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from farm.config.plan import ServerRequest, TlsSettings, Transport, default_devices


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetSpec:
    """A fleet: its template, its count at start, and its first n servers for any n."""

    name: str
    template: str
    count: int
    capacity: int  # servers its addressing holds
    servers: Callable[[int], list[ServerRequest]]  # the first n, by name and address

    def names(self, count: int) -> list[str]:
        return [request.name for request in self.servers(count)]


def default_fleet(
    count: int,
    host: str,
    port_base: int,
    template: str,
    transport: Transport = "tcp",
    tls: TlsSettings | None = None,
) -> FleetSpec:
    """The fleet of `farm up --count N`: device-0000... on consecutive ports of one host.

    Names keep the width they had at start (device-0099 stays device-0099 when the fleet
    grows past 10,000; the new ones are device-10000...).
    """
    width = max(4, len(str(count - 1)))

    def servers(n: int) -> list[ServerRequest]:
        return default_devices(n, width, host, port_base, template, transport, tls)

    return FleetSpec(
        name="default",
        template=template,
        count=count,
        capacity=65536 - port_base,
        servers=servers,
    )
