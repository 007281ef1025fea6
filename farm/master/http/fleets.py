"""Routes for fleets: how many servers each has, and scaling one while the farm runs.

    GET  /api/v1/fleets                every fleet: its servers now, its address range's room
    POST /api/v1/fleets/{name}/scale   {"count": N}: grow or shrink the fleet to N servers

Part of the control API (farm.master.http.app assembles it); scaling is farm.master.fleet.scale's.
The
answer comes once the workers serve the newcomers (or have closed the leavers' ports).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from farm.master.fleet.scale import CannotScale, Scaler
from farm.master.http.routes import ApiError, Call, Conflict, Invalid, NotFound, Route, Strict


class FleetView(BaseModel):
    name: str
    template: str
    servers: int = Field(description="Servers it has now")
    capacity: int = Field(description="Servers its address range holds")


class FleetList(BaseModel):
    fleets: list[FleetView]


class FleetPath(Strict):
    name: str = Field(description="The fleet's name, as the config file gives it")


class ScaleBody(Strict):
    count: int = Field(description="Servers the fleet should have (0 to its capacity)")


class ScaledView(BaseModel):
    fleet: str
    before: int
    count: int
    added: list[str] = Field(description="New servers, named and addressed as the fleet's next")
    removed: list[str] = Field(description="Servers that left (the fleet's last ones)")
    seconds: float


_ERRORS: dict[int, type[ApiError]] = {404: NotFound, 409: Conflict, 422: Invalid}


def fleet_routes(scaler: Scaler) -> list[Route]:
    async def list_fleets(call: Call) -> FleetList:
        counts = scaler.counts()
        return FleetList(
            fleets=[
                FleetView(
                    name=fleet.name,
                    template=fleet.template,
                    servers=counts[fleet.name],
                    capacity=fleet.capacity,
                )
                for fleet in scaler.fleets.values()
            ]
        )

    async def scale_fleet(call: Call) -> ScaledView:
        name = call.path_as(FleetPath).name
        try:
            done = await scaler.scale(name, call.body_as(ScaleBody).count)
        except CannotScale as error:
            raise _ERRORS[error.status](str(error)) from error
        return ScaledView(
            fleet=done.fleet,
            before=done.before,
            count=done.count,
            added=list(done.added),
            removed=list(done.removed),
            seconds=round(done.seconds, 4),
        )

    return [
        Route(
            method="GET",
            path="/api/v1/fleets",
            handler=list_fleets,
            summary="Every fleet: its servers now and how many its addresses hold",
            response=FleetList,
            tag="fleets",
        ),
        Route(
            method="POST",
            path="/api/v1/fleets/{name}/scale",
            handler=scale_fleet,
            summary="Grow or shrink a fleet while the farm runs (no worker restarts)",
            description="New servers take the fleet's next names and addresses and go to the "
            "least-loaded worker; the fleet shrinks from its end. 409 if a new address is "
            "taken (nothing changes).",
            path_model=FleetPath,
            body=ScaleBody,
            response=ScaledView,
            errors=(404, 409),
            tag="fleets",
        ),
    ]
