"""Routes for scenarios: play one on the running farm, see its timeline, stop it.

    POST   /api/v1/scenario     a scenario (a config file's `scenario:` section as JSON);
                                checked against the farm as it is, then played from now
    GET    /api/v1/scenario     the timeline, each step's state, the current step
    DELETE /api/v1/scenario     stop it and undo what it applied

Part of the control API (farm.master.http.app assembles it); the player is
farm.master.scenario.player's. A scenario the farm cannot play (an unknown fleet, server or point,
steps out of order, a scale past a fleet's addresses...) is refused with 422 and one line
naming the step and the fix, and nothing is applied; one while another plays, 409.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from farm.config.scenario.model import ScenarioModel, Timeline, compile_scenario
from farm.errors import ConfigError
from farm.master.http.routes import Call, Conflict, Invalid, NotFound, Route
from farm.master.scenario.player import ScenarioPlayer


class Compiled(BaseModel):
    """A scenario body, compiled (what the handler gets from the body parser)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    timeline: Timeline


class CurrentStep(BaseModel):
    step: int = Field(description="Its number, from 1 (as the log, the metric and the page)")
    name: str


class StepView(BaseModel):
    step: int = Field(description="Its number, from 1 (as the log, the metric and the page)")
    name: str
    action: str = Field(description="fault, set, stop, start or scale")
    at_s: float = Field(description="When it starts in a play, from the play's start")
    for_s: float | None = Field(description="How long it lasts (null: it has no end)")
    state: str = Field(description="pending, active (its for runs), done or failed")
    starts_in_s: float = Field(description="0 once started in this play")
    error: str | None = Field(description="Why it could not act, if it failed")


class ScenarioView(BaseModel):
    state: str = Field(description="playing, done (every step played) or stopped")
    seed: int
    repeat: int | str = Field(description="How many plays, or 'forever'")
    play: int = Field(description="Which play this is, from 1")
    length_s: float = Field(description="One play's length")
    elapsed_s: float | None = Field(description="Since the scenario began (while playing)")
    current: CurrentStep | None = Field(description="The step started last")
    steps: list[StepView]


def parse_scenario(data: Any) -> Compiled:
    if isinstance(data, dict) and "scenario" in data and "steps" not in data:
        data = data["scenario"]  # a whole config file's worth, as JSON
    try:
        return Compiled(timeline=compile_scenario(data))
    except ConfigError as error:
        raise Invalid(str(error)) from error


def scenario_routes(player: ScenarioPlayer) -> list[Route]:
    starting = asyncio.Lock()  # held while a play starts (the last one undone first)

    async def play_scenario(call: Call) -> ScenarioView:
        timeline = call.body_as(Compiled).timeline
        # Two POSTs at once: the second must not start while the first undoes the last play.
        if player.playing or starting.locked():
            raise Conflict("a scenario is playing; `farm scenario stop` ends it first")
        try:
            player.check(timeline)
        except ConfigError as error:
            raise Invalid(str(error)) from error
        async with starting:
            await player.stop()  # a finished one's changes are undone before the next
            player.begin(timeline)
        return ScenarioView.model_validate(player.view())

    async def get_scenario(call: Call) -> ScenarioView:
        if player.timeline is None:
            raise NotFound("no scenario has played; `farm scenario run FILE` plays one")
        return ScenarioView.model_validate(player.view())

    async def stop_scenario(call: Call) -> ScenarioView:
        if player.timeline is None:
            raise NotFound("no scenario has played; nothing to stop")
        await player.stop()
        return ScenarioView.model_validate(player.view())

    path = "/api/v1/scenario"
    return [
        Route(
            method="POST",
            path=path,
            handler=play_scenario,
            summary="Play a scenario on the farm from now (checked first: nothing is applied "
            "if a step cannot play)",
            body=ScenarioModel,
            body_parser=parse_scenario,
            response=ScenarioView,
            errors=(409,),
            tag="scenario",
        ),
        Route(
            method="GET",
            path=path,
            handler=get_scenario,
            summary="The scenario's timeline: each step's state, and the current step",
            response=ScenarioView,
            errors=(404,),
            tag="scenario",
        ),
        Route(
            method="DELETE",
            path=path,
            handler=stop_scenario,
            summary="Stop the scenario and undo what it applied (faults, stops, sets, scaling)",
            response=ScenarioView,
            errors=(404,),
            tag="scenario",
        ),
    ]
