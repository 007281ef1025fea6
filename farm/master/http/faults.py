"""Routes for faults: put misbehaviour on any slice of the fleet, list it, clear it.

    POST   /api/v1/faults          a fault (farm.config.faults.spec.FaultSpec); answers the fault,
                                   its id and the servers it resolved to, once it is in
                                   effect (when it starts at once)
    GET    /api/v1/faults          every fault, scheduled or active
    GET    /api/v1/faults/{id}     one fault
    DELETE /api/v1/faults/{id}     clear one fault (answers the fault as it was)
    DELETE /api/v1/faults          clear every fault

Part of the control API (farm.master.http.app assembles it); the table is farm.master.faults.table'.
The body is a union of one model per kind: it is parsed by farm.config.faults.spec.parse_fault,
whose error names the field to fix ("ms: required, missing"), rather than by the generic
route validation, which would name the union's branch too.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field, RootModel

from farm.config.faults.spec import FaultSpec, FaultSpecError, parse_fault
from farm.master.faults.entry import Fault
from farm.master.faults.table import FaultTable
from farm.master.http.routes import Call, Invalid, NotFound, Route, Strict


class FaultRequest(RootModel[FaultSpec]):
    """A fault: its kind and the kind's parameters, a target, and when and what it hits."""


class FaultView(BaseModel):
    id: int
    kind: str
    state: Literal["scheduled", "active", "expired", "cleared"]
    servers: list[str] = Field(description="The servers the target resolved to")
    starts_in_s: float = Field(description="0 once it has started")
    ends_in_s: float | None = Field(description="null: until cleared")
    spec: FaultRequest = Field(description="The fault as asked, with every default filled in")


class FaultList(BaseModel):
    faults: list[FaultView]


class Cleared(BaseModel):
    cleared: list[int] = Field(description="Ids of the faults cleared")


class FaultPath(Strict):
    id: int = Field(ge=1, description="The fault's id, as `farm fault list` shows it")


def parse_request(data: Any) -> FaultRequest:
    try:
        return FaultRequest(parse_fault(data))
    except FaultSpecError as error:
        raise Invalid(str(error)) from error


def view(fault: Fault, now: float | None = None) -> FaultView:
    return FaultView.model_validate(fault.view(time.monotonic() if now is None else now))


def fault_routes(table: FaultTable) -> list[Route]:
    def find(call: Call) -> Fault:
        fault_id = call.path_as(FaultPath).id
        fault = table.get(fault_id)
        if fault is None:
            raise NotFound(f"no fault {fault_id}; `farm fault list` shows the faults there are")
        return fault

    async def add_fault(call: Call) -> FaultView:
        try:
            fault = table.add(call.body_as(FaultRequest).root)
        except FaultSpecError as error:  # a target this farm does not have
            raise Invalid(str(error)) from error
        await table.settle()
        return view(fault)

    async def list_faults(call: Call) -> FaultList:
        now = time.monotonic()
        return FaultList(faults=[view(fault, now) for fault in table.faults.values()])

    async def get_fault(call: Call) -> FaultView:
        return view(find(call))

    async def clear_fault(call: Call) -> FaultView:
        fault = find(call)
        table.remove(fault.id)
        await table.settle()
        return view(fault)

    async def clear_faults(call: Call) -> Cleared:
        cleared = table.clear()
        await table.settle()
        return Cleared(cleared=[fault.id for fault in cleared])

    base, one = "/api/v1/faults", "/api/v1/faults/{id}"
    return [
        Route(
            method="POST",
            path=base,
            handler=add_fault,
            summary="Put a fault on servers; answers once it is in effect (if it starts now)",
            body=FaultRequest,
            body_parser=parse_request,
            response=FaultView,
            tag="faults",
        ),
        Route(
            method="GET",
            path=base,
            handler=list_faults,
            summary="Every fault, scheduled or active",
            response=FaultList,
            tag="faults",
        ),
        Route(
            method="DELETE",
            path=base,
            handler=clear_faults,
            summary="Clear every fault",
            response=Cleared,
            tag="faults",
        ),
        Route(
            method="GET",
            path=one,
            handler=get_fault,
            summary="One fault",
            path_model=FaultPath,
            response=FaultView,
            errors=(404,),
            tag="faults",
        ),
        Route(
            method="DELETE",
            path=one,
            handler=clear_fault,
            summary="Clear one fault; answers it as it was",
            path_model=FaultPath,
            response=FaultView,
            errors=(404,),
            tag="faults",
        ),
    ]
