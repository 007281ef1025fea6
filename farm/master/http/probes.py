"""The liveness probe: `GET /api/v1/live`, 200 while the master's loop runs and every
worker heartbeats (or is being replaced within the time the supervisor allows), else 503.

Part of the master's HTTP side (supervisor -> api). An orchestrator restarts a farm whose
probe fails, so the probe must fail only when the farm cannot heal itself: a worker that
stops heartbeating is the supervisor's to replace (`heartbeat_timeout_s`), a replacement
gets its backoff and `boot_timeout_s`, and only a slot silent for longer than all of those
together means the supervisor itself is stuck. A stuck master loop does not answer at all,
which a probe counts as a failure too. Readiness is another question (`/api/v1/ready`).
"""

from __future__ import annotations

import time

from aiohttp import web
from pydantic import BaseModel

from farm.master.http.routes import Call, Route
from farm.master.supervision.supervisor import Supervisor


def silent_limit_s(supervisor: Supervisor) -> float:
    """How long a slot may go without a heartbeat or a fresh spawn before the farm is dead."""
    options = supervisor.options
    return options.heartbeat_timeout_s + options.boot_timeout_s + max(options.backoff_s)


def liveness(supervisor: Supervisor) -> tuple[bool, str]:
    """(live, why): why names the first worker found silent too long."""
    if supervisor.fatal is not None:
        return False, str(supervisor.fatal)
    now = time.monotonic()
    limit = silent_limit_s(supervisor)
    for slot in supervisor.slots:
        silent = now - max(slot.last_heartbeat, slot.spawned_at)
        if slot.spawned_at and silent > limit:
            return False, (
                f"worker {slot.shard.worker} ({slot.state}) silent for {silent:.0f} s, "
                f"more than the {limit:.0f} s the supervisor needs to replace it"
            )
    return True, "master loop running, every worker heartbeating or being replaced"


class Liveness(BaseModel):
    live: bool
    reason: str


def live_route(supervisor: Supervisor) -> Route:
    async def get_live(call: Call) -> web.Response:
        live, why = liveness(supervisor)
        body = Liveness(live=live, reason=why).model_dump_json()
        return web.Response(text=body, content_type="application/json", status=200 if live else 503)

    return Route(
        method="GET",
        path="/api/v1/live",
        handler=get_live,
        summary="Liveness: 200 while the master runs and every worker heartbeats, else 503",
        response=Liveness,
        errors=(503,),
        tag="meta",
    )
