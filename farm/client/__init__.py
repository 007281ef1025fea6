"""The one client of a farm's control API: the CLI, `farm bench` and users' own tests use it.

    from farm.client import FarmClient
    client = FarmClient("http://127.0.0.1:9502", token=None)
    client.status()["servers_ready"]
    [s.name for s in client.servers(fleet="meters", state="up")]
    client.write("device-0001", "holding_registers", 10, [1234, 5678])
    client.read("device-0001", "holding_registers", 10, count=2)      # [1234, 5678]
    client.set_point("meter-0003", "voltage_l1", 231.5).value         # 231.5
    client.stop("device-0006"); client.start("device-0006")
    fault = client.fault("delay", target=Fleet("meters"), ms=800, duration="30s")
    client.clear_fault(fault.id)               # targets: farm.client.selectors
    client.play_scenario({"steps": [{"at": "1s", "fault": {"kind": "offline", "target": "x"}}]})
    client.scenario()["current"]; client.stop_scenario()
    client.scale("meters", 30)
    client.writes("meter-0005", after=0)[-1].values   # the journal: who wrote what, when
    client.clients()[0].poll_p50_s                    # who polls, how often

Only this package speaks HTTP to the API (`api`; `answers` holds what the calls return,
`observed` what they say about the system under test,
`options` the command-line options, `defaults` the API's default address, `selectors` a
fault's servers). Every failure reaches
the caller as a `FarmError`:
`FarmUnreachable` when no farm answers (the one place that turns that into its line), and
`FarmAPIError` (with the HTTP status and the API's own message) when the farm refused a
call. The API's options (`--api-host`, `--api-port`, `--api-token`/FARM_API_TOKEN) are
declared here once, for every command that talks to a farm or serves one.

Each name below loads its module when it is first used (`from farm.client import
FarmClient` loads api, answers, observed and selectors): `farm up` declares the API's
options (options, defaults) and needs no client, which would cost a start 0.015 s.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from farm.client.answers import (
        DeviceList,
        DeviceTarget,
        PointTarget,
        PointValue,
        ServerDetail,
        ServerInfo,
        ServerPage,
        Switched,
    )
    from farm.client.api import TIMEOUT_S, FarmAPIError, FarmClient
    from farm.client.defaults import DEFAULT_API_HOST, DEFAULT_API_PORT
    from farm.client.observed import ClientInfo, PollInfo, WriteRecord
    from farm.client.options import (
        api_host_option,
        api_options,
        api_port_option,
        api_token_option,
        farm_clients,
        farms_option,
    )
    from farm.client.selectors import FaultInfo, Fleet, Fraction, Glob, Servers, Target

__all__ = [
    "DEFAULT_API_HOST",
    "DEFAULT_API_PORT",
    "TIMEOUT_S",
    "ClientInfo",
    "DeviceList",
    "DeviceTarget",
    "FarmAPIError",
    "FarmClient",
    "FaultInfo",
    "Fleet",
    "Fraction",
    "Glob",
    "PointTarget",
    "PointValue",
    "PollInfo",
    "ServerDetail",
    "ServerInfo",
    "ServerPage",
    "Servers",
    "Switched",
    "Target",
    "WriteRecord",
    "api_host_option",
    "api_options",
    "api_port_option",
    "api_token_option",
    "farm_clients",
    "farms_option",
]


_PARTS = ("answers", "api", "defaults", "observed", "options", "selectors")


def __getattr__(name: str) -> Any:
    """A public name, from the part that defines it (loaded now if need be)."""
    if name in __all__:
        for part in _PARTS:
            module = importlib.import_module(f"farm.client.{part}")
            if name in vars(module):
                globals()[name] = value = vars(module)[name]  # the next use finds it here
                return value
    raise AttributeError(f"module 'farm.client' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
