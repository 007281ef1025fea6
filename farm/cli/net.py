"""`farm net plan|up|down FILE`: devices at their own IPs, reachable from another host.

On Linux one route makes a whole subnet local to this host ("AnyIP"):
`ip route add local 10.77.0.0/16 dev lo`; any address in it can then be bound, and a SCADA
host that routes the subnet to this host reaches each device at its own IP. `plan` prints
the commands for both hosts; `up` and `down` add and remove the local routes here, which
needs CAP_NET_ADMIN (root), and say so in one line without it. They run iproute2's `ip`
with argument lists (no shell), and touch only the routes the fleets' subnets name.

Binding a port below 1024 (Modbus's 502) needs root or CAP_NET_BIND_SERVICE: `farm up`
checks that first (`bind_privilege_problem`) and says how to get it.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from farm.errors import ConfigError, FarmError
from farm.output import exit_with

if TYPE_CHECKING:
    from farm.config.fleets import FarmFile

CAP_NET_BIND_SERVICE = 10
CAP_NET_ADMIN = 12
Network = ipaddress.IPv4Network


def capability(bit: int) -> bool:
    """Whether this process holds a capability (root holds them all, normally)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError):
        pass
    return False


def unprivileged_port_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


def bind_privilege_problem(ports: Iterable[int]) -> str | None:
    """One line saying why this process cannot bind the lowest of `ports`, and how it could."""
    low = min(ports, default=65535)
    if low >= unprivileged_port_start() or capability(CAP_NET_BIND_SERVICE):
        return None
    python = Path(sys.executable).resolve()
    return (
        f"port {low} is below {unprivileged_port_start()}: binding it needs root or "
        f"CAP_NET_BIND_SERVICE; run `farm up` as root, or once "
        f"`sudo setcap cap_net_bind_service=+ep {python}`"
    )


def _load(file: str) -> FarmFile:
    # Here, not at the top: `farm up` imports this module for bind_privilege_problem, and
    # with no config file it need not load pydantic.
    from farm.config.fleets import load

    return load(file)


def route_command(verb: str, network: Network) -> list[str]:
    return ["ip", "route", verb, "local", str(network), "dev", "lo"]


def scada_commands(network: Network, via: str) -> list[str]:
    return [
        f"ip route add {network} via {via}",
        f"route -p ADD {network.network_address} MASK {network.netmask} {via}",
    ]


def networks_of(file: str, count: int | None) -> list[Network]:
    return _load(file).routed_networks(count)


def local_routes() -> set[Network]:
    """The local routes on lo now (ip's own JSON output)."""
    result = _ip(["ip", "-j", "route", "show", "table", "local", "type", "local", "dev", "lo"])
    routes = set()
    for route in json.loads(result.stdout or "[]"):
        try:
            routes.add(ipaddress.IPv4Network(route["dst"]))
        except (KeyError, ValueError):
            continue  # IPv6 or something else: not ours
    return routes


def _ip(command: list[str]) -> subprocess.CompletedProcess[str]:
    if shutil.which("ip") is None:
        raise FarmError("`ip` (iproute2) is not installed: apt-get install iproute2")
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)


def change_routes(networks: list[Network], adding: bool) -> list[str]:
    """Add (or remove) the local route of each network; returns one line per network."""
    verb = "add" if adding else "del"
    if not capability(CAP_NET_ADMIN):
        commands = "; ".join(" ".join(route_command(verb, n)) for n in networks)
        raise FarmError(
            f"changing routes needs CAP_NET_ADMIN: run `farm net {'up' if adding else 'down'}` "
            f"as root, or run as root: {commands}"
        )
    present = local_routes()
    lines = []
    for network in networks:
        if (network in present) == adding:
            lines.append(f"{network}: {'already' if adding else 'not'} local, nothing to do")
            continue
        result = _ip(route_command(verb, network))
        if result.returncode != 0:
            raise FarmError(
                f"{' '.join(route_command(verb, network))} failed: {result.stderr.strip()}"
            )
        lines.append(f"{network}: {'now local' if adding else 'no longer local'} on this host")
    return lines


@click.group()
def net() -> None:
    """Devices at their own IPs: the routes that make a fleet's subnets reachable."""


@net.command(name="plan")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--count", type=int, default=None, help="Scale the fleets to this many servers.")
@click.option(
    "--via",
    default="FARM_HOST",
    show_default=True,
    help="This host's address as the SCADA host reaches it.",
)
def plan_routes(file: str, count: int | None, via: str) -> None:
    """Print the commands that make FILE's devices reachable from a SCADA host."""
    try:
        networks = networks_of(file, count)
        ports = sorted({r.port for r in _load(file).expand(count)[1]})
    except FarmError as error:
        exit_with(error)
    if not networks:
        click.echo(
            f"# {file}: every device is on 127.0.0.0/8 or on a port range: nothing to route.\n"
            "# A SCADA on another host cannot reach 127.x addresses; give the fleets a "
            "subnet (addressing: {subnet: 10.77.0.0/16, port: 502})."
        )
        return
    click.echo("# On the farm host (needs CAP_NET_ADMIN; `farm net up FILE` runs these):")
    for network in networks:
        click.echo(" ".join(route_command("add", network)))
    click.echo(f"# On the SCADA host, {via} being the farm host's address on its network:")
    click.echo("# Linux (as root):")
    for network in networks:
        click.echo(scada_commands(network, via)[0])
    click.echo("# Windows (as Administrator; -p keeps the route across reboots):")
    for network in networks:
        click.echo(scada_commands(network, via)[1])
    click.echo("# To undo on the farm host: `farm net down FILE`.")
    problem = bind_privilege_problem(ports)
    if problem is not None:
        click.echo(f"# Note: {problem}.")


@net.command(name="up")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--count", type=int, default=None, help="Scale the fleets to this many servers.")
def up_routes(file: str, count: int | None) -> None:
    """Make FILE's subnets local to this host (AnyIP routes on lo); needs CAP_NET_ADMIN."""
    _change(file, count, adding=True)


@net.command(name="down")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--count", type=int, default=None, help="Scale the fleets to this many servers.")
def down_routes(file: str, count: int | None) -> None:
    """Remove the local routes `farm net up FILE` added; needs CAP_NET_ADMIN."""
    _change(file, count, adding=False)


def _change(file: str, count: int | None, adding: bool) -> None:
    try:
        networks = networks_of(file, count)
        if not networks:
            raise ConfigError(f"{file}: no fleet has addresses outside 127.0.0.0/8 to route")
        for line in change_routes(networks, adding):
            click.echo(line)
    except FarmError as error:
        exit_with(error)
