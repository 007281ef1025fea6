"""Who wants which server down: the farm's intent, which farm.master.fleet.switch makes true.

A server is down while anyone holds it down: the API (`farm server stop`), a scenario's stop
step, or an active offline or reboot fault (one hold per fault). Holds are taken and given
back at once, on the master's loop, whatever the workers are doing; the switch then brings
what the workers serve in line with them, however slow they are to confirm. So the order in
which a stop and its undoing are confirmed can never leave a server down that nobody holds
(a fault that ends before its stop was confirmed), nor up while something holds it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

API = "api"  # farm server stop / start
SCENARIO = "scenario"  # a scenario's stop step, until its `for` is over or the play stops


def fault_hold(fault_id: int) -> str:
    """The hold of an active offline or reboot fault."""
    return f"fault {fault_id}"


class Intent:
    """Each server's holds; a server with none should serve."""

    def __init__(self) -> None:
        self._holds: dict[str, set[str]] = {}

    def down(self, name: str) -> bool:
        return name in self._holds

    def holders(self, name: str) -> tuple[str, ...]:
        return tuple(sorted(self._holds.get(name, ())))

    def hold(self, names: Iterable[str], holder: str) -> list[str]:
        """`holder` wants `names` down; returns those nobody held before."""
        newly = []
        for name in dict.fromkeys(names):
            holds = self._holds.setdefault(name, set())
            if not holds:
                newly.append(name)
            holds.add(holder)
        return newly

    def release(self, names: Iterable[str], holders: Collection[str]) -> list[str]:
        """`holders` no longer want `names` down; returns those nobody holds now."""
        freed = []
        for name in dict.fromkeys(names):
            holds = self._holds.get(name)
            if holds is None:
                continue
            holds.difference_update(holders)
            if not holds:
                del self._holds[name]
                freed.append(name)
        return freed

    def release_all(self, holder: str) -> list[str]:
        """`holder` lets go of every server it holds; returns those nobody holds now."""
        return self.release(
            [name for name, holds in self._holds.items() if holder in holds], {holder}
        )

    def forget(self, names: Iterable[str]) -> None:
        """Servers that left the farm (a fleet scaled down)."""
        for name in names:
            self._holds.pop(name, None)
