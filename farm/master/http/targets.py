"""GET /api/v1/targets: every device of this farm as a SCADA imports it.

A route of the control API (farm.master.http.routes), built from the plan by
farm.config.targets. The plan changes only when a fleet is scaled (farm.master.fleet.scale puts a
new one in its place), so the answer is encoded once per plan, on the first request for it,
off the loop (16,667 devices make a few MB of JSON); the models
here document it in the OpenAPI document, and tests/test_targets.py checks the answer
against them.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from farm.config.plan import Plan
from farm.config.targets import device_list
from farm.master.http.routes import Call, Route
from farm.master.supervision.supervisor import Supervisor


class Documented(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShardPart(Documented):
    """Shard `index` of `count`: the fleet's servers start..stop-1 of fleet_total."""

    index: int
    count: int
    start: int
    stop: int
    fleet_total: int


class PointTarget(Documented):
    name: str
    unit_id: int
    table: str
    address: int
    count: int
    type: str
    byte_order: str
    word_order: str
    scale: float
    writable: bool


class TemplateTargets(Documented):
    unit_ids: list[int]
    points: list[PointTarget]


class DeviceTarget(Documented):
    index: int
    name: str
    fleet: str
    ip: str
    port: int
    transport: str  # tcp, rtu-over-tcp, udp or tls
    template: str


class TargetList(Documented):
    """This farm's devices; each names its template, whose unit ids and points are listed once."""

    shard: ShardPart
    templates: dict[str, TemplateTargets]
    devices: list[DeviceTarget]


def targets_route(supervisor: Supervisor) -> Route:
    encoded: list[tuple[Plan, bytes]] = []  # the answer, with the plan it was built from

    async def get_targets(call: Call) -> web.Response:
        plan = supervisor.plan
        if not encoded or encoded[0][0] is not plan:  # a fleet was scaled since
            text = await asyncio.to_thread(lambda: json.dumps(device_list(plan)))
            encoded[:] = [(plan, text.encode())]
        return web.Response(body=encoded[0][1], content_type="application/json")

    return Route(
        method="GET",
        path="/api/v1/targets",
        handler=get_targets,
        summary="Every device as a SCADA imports it: address, unit ids, template and points",
        response=TargetList,
    )
