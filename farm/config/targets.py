"""The device list a SCADA imports: every device's address and unit ids, and its points.

Pure data from a Plan (config -> plan -> targets): the master serves it as
`GET /api/v1/targets`, and `farm targets` (farm/cli/targets.py) merges the lists of every
shard into CSV or JSON. A template's points are listed once, under the template, and each
device names its template: 50,000 devices of one template stay a small answer.

    {"shard": {...}, "templates": {"default": {"unit_ids": [1], "points": [...]}},
     "devices": [{"index": 0, "name": "device-0000", "fleet": "default",
                  "ip": "127.0.0.1", "port": 5020, "transport": "tcp",
                  "template": "default"}, ...]}

A point: name, unit_id, table, address (from 0, as on the wire), count (registers or bits it
takes), type, byte_order, word_order, scale (register value = engineering value / scale) and
writable (false for input registers and discrete inputs, and for `writable: false` points).
"""

from __future__ import annotations

from typing import Any

from farm.config.plan import Plan
from farm.config.templates import DeviceTemplate, Point


def point_row(point: Point) -> dict[str, Any]:
    return {
        "name": point.name,
        "unit_id": point.unit_id,
        "table": str(point.table),
        "address": point.address,
        "count": point.width,
        "type": str(point.type),
        "byte_order": point.byte_order,
        "word_order": point.word_order,
        "scale": point.scale,
        "writable": point.writable_by_clients,
    }


def template_row(template: DeviceTemplate) -> dict[str, Any]:
    return {
        "unit_ids": [unit.unit_id for unit in template.units],
        "points": [point_row(point) for point in template.points],
    }


def device_list(plan: Plan) -> dict[str, Any]:
    """This farm's devices as a SCADA would import them (JSON-ready)."""
    servers = plan.servers()
    used = dict.fromkeys(spec.template for spec in servers)
    return {
        "shard": plan.fleet_slice.as_json(),
        "templates": {name: template_row(plan.templates[name]) for name in used},
        "devices": [
            {
                "index": spec.index,
                "name": spec.name,
                "fleet": spec.fleet,
                "ip": spec.host,
                "port": spec.port,
                "transport": spec.transport,
                "template": spec.template,
            }
            for spec in servers
        ],
    }
