"""Devices at their own IPs on port 502, read from another host (farm net, AnyIP).

The test builds its own SCADA host: a network namespace joined to this one by a veth pair,
with a route to the farm's subnet through it. `farm net up` makes the subnet local here,
`farm up` serves 200 devices at 200 addresses of it on port 502, and from inside the
namespace mbpoll and pymodbus's client read and write devices at their IPs. The namespace,
the veth pair and the route are removed even when the test fails (fixture finally), and
the teardown checks that nothing is left. Namespaces need root and iproute2: without them
the test is skipped, with the reason; a missing program (ip, mbpoll, setpriv) fails it, as
every program scripts/test installs does (tests/tools.py).
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.farmproc import FarmProcess, free_port
from tests.tools import tool

DEVICES = 200


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=check)


def _unavailable() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux's"
    if os.geteuid() != 0:
        return "network namespaces and routes need root (CI runs the suite as root)"
    if shutil.which("ip") is None:
        return None  # not a question of privilege: the test fails, naming the package
    probe = f"mfprobe{os.getpid()}"
    result = run("ip", "netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"cannot create a network namespace here: {result.stderr.strip()}"
    run("ip", "netns", "del", probe, check=False)
    return None


UNAVAILABLE = _unavailable()
pytestmark = [
    pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or ""),
    pytest.mark.timeout(240),
]


@dataclass(frozen=True)
class ScadaHost:
    namespace: str
    subnet: ipaddress.IPv4Network  # the farm's devices
    farm_side: str  # veth ends
    scada_side: str

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, *command],
            capture_output=True,
            text=True,
            timeout=120,
        )


def _routes_mention(prefix: str) -> bool:
    return prefix in run("ip", "route", "show", "table", "all").stdout


def _free_subnets() -> tuple[int, ipaddress.IPv4Network, ipaddress.IPv4Network]:
    """A /24 for the devices and a /30 for the link, in no route of this host yet."""
    for _ in range(50):
        n = random.randrange(1, 255)
        devices = ipaddress.IPv4Network(f"10.231.{n}.0/24")
        link = ipaddress.IPv4Network(f"10.230.{n}.0/30")
        if not _routes_mention(f"10.231.{n}.") and not _routes_mention(f"10.230.{n}."):
            return n, devices, link
    raise RuntimeError("no free 10.231.x.0/24 found")


def _leftovers(host: ScadaHost) -> list[str]:
    found = []
    if host.namespace in run("ip", "netns", "list").stdout.split():
        found.append(f"namespace {host.namespace}")
    if run("ip", "link", "show", host.farm_side, check=False).returncode == 0:
        found.append(f"link {host.farm_side}")
    if _routes_mention(str(host.subnet)):
        found.append(f"route {host.subnet}")
    return found


@pytest.fixture
def scada_host() -> Iterator[ScadaHost]:
    tool("ip")
    n, subnet, link = _free_subnets()
    tag = f"{os.getpid() % 100000}{n}"
    host = ScadaHost(f"mf-scada-{tag}", subnet, f"mfa{tag}"[:15], f"mfb{tag}"[:15])
    farm_ip, scada_ip = (str(a) for a in list(link.hosts())[:2])
    try:
        run("ip", "netns", "add", host.namespace)
        run("ip", "link", "add", host.farm_side, "type", "veth", "peer", "name", host.scada_side)
        run("ip", "link", "set", host.scada_side, "netns", host.namespace)
        run("ip", "addr", "add", f"{farm_ip}/30", "dev", host.farm_side)
        run("ip", "link", "set", host.farm_side, "up")
        inside = ["ip", "-n", host.namespace]
        run(*inside, "addr", "add", f"{scada_ip}/30", "dev", host.scada_side)
        run(*inside, "link", "set", host.scada_side, "up")
        run(*inside, "link", "set", "lo", "up")
        # What `farm net plan` tells the SCADA host to do: route the subnet to the farm host.
        run(*inside, "route", "add", str(subnet), "via", farm_ip)
        yield host
    finally:
        # Deleting the namespace deletes its veth end, and with it the pair.
        run("ip", "netns", "del", host.namespace, check=False)
        run("ip", "link", "del", host.farm_side, check=False)
        run("ip", "route", "del", "local", str(subnet), "dev", "lo", check=False)
        left = _leftovers(host)
        assert not left, f"left behind: {left}"


def farm_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farm", *args], capture_output=True, text=True, timeout=60
    )


READ_ALL = """
import sys
from pymodbus.client import ModbusTcpClient
subnet, count = sys.argv[1], int(sys.argv[2])
base = [int(x) for x in subnet.split(".")]
addresses = [f"{base[0]}.{base[1]}.{base[2]}.{i}" for i in range(1, count + 1)]
for write in (True, False):
    for i, address in enumerate(addresses):
        client = ModbusTcpClient(address, port=502, timeout=5, retries=1)
        assert client.connect(), address
        if write:
            assert not client.write_register(7, 1000 + i).isError(), address
        value = client.read_holding_registers(7, count=1).registers[0]
        assert value == 1000 + i, (address, value)
        client.close()
print("read", len(addresses))
"""


def test_a_scada_in_another_namespace_reads_devices_at_their_own_ips(
    scada_host: ScadaHost, tmp_path: Path
) -> None:
    config = tmp_path / "plant.yaml"
    config.write_text(
        "fleets:\n"
        f"  - {{name: plc, template: default, count: {DEVICES},\n"
        f"     addressing: {{subnet: {scada_host.subnet}, port: 502}}}}\n"
    )
    plan = farm_cli("net", "plan", str(config))
    assert f"ip route add local {scada_host.subnet} dev lo" in plan.stdout
    assert f"ip route add {scada_host.subnet} via FARM_HOST" in plan.stdout
    up = farm_cli("net", "up", str(config))
    assert up.returncode == 0, up.stderr
    assert (
        f"local {scada_host.subnet} dev lo" in run("ip", "route", "show", "table", "local").stdout
    )
    farm = FarmProcess(
        count=DEVICES, workers=2, port_base=502, api_port=free_port(), file=str(config)
    ).start()
    try:
        farm.wait_ready(120)
        addresses = list(scada_host.subnet.hosts())
        for address in (addresses[0], addresses[DEVICES - 1]):
            # The uptime counter and three other live input registers of that device.
            polled = scada_host.run(
                tool("mbpoll"), "-m", "tcp", "-a", "1", "-t", "3", "-r", "1", "-c", "4", "-1",
                "-o", "5", str(address),
            )  # fmt: skip
            assert polled.returncode == 0, polled.stdout + polled.stderr
            assert "[1]:" in polled.stdout and "[4]:" in polled.stdout, polled.stdout
        read = scada_host.run(
            sys.executable, "-c", READ_ALL, str(scada_host.subnet.network_address), str(DEVICES)
        )
        assert read.returncode == 0, read.stderr
        assert read.stdout.strip() == f"read {DEVICES}"
    finally:
        code, _, stderr = farm.stop()
        assert code == 0, stderr
        down = farm_cli("net", "down", str(config))  # the fixture removes the route anyway
    assert down.returncode == 0, down.stderr
    assert str(scada_host.subnet) not in run("ip", "route", "show", "table", "local").stdout


def test_without_the_privileges_each_command_says_what_it_needs(tmp_path: Path) -> None:
    """Run as root with CAP_NET_ADMIN and CAP_NET_BIND_SERVICE dropped from the bounding set."""
    config = tmp_path / "plant.yaml"
    config.write_text(
        "fleets:\n  - {name: plc, template: default, count: 3, "
        "addressing: {subnet: 10.231.0.0/24, port: 502}}\n"
    )
    drop = [tool("setpriv"), "--bounding-set", "-net_admin,-net_bind_service", sys.executable]
    for verb, command in (("up", "add"), ("down", "del")):
        net = subprocess.run(
            [*drop, "-m", "farm", "net", verb, str(config)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert net.returncode == 1, net.stderr
        assert "needs CAP_NET_ADMIN" in net.stderr, net.stderr
        assert f"ip route {command} local 10.231.0.0/24 dev lo" in net.stderr, net.stderr
        assert len(net.stderr.strip().splitlines()) == 1, net.stderr
    up = subprocess.run(
        [*drop, "-m", "farm", "up", str(config), "--api-port", str(free_port())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert up.returncode == 2
    assert "port 502 is below 1024" in up.stderr and "CAP_NET_BIND_SERVICE" in up.stderr
    assert len(up.stderr.strip().splitlines()) == 1
