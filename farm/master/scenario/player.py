"""The scenario player: plays a timeline (farm.config.scenario.model) on the running farm.

Sits in the master beside the fault table (api_scenario -> scenario -> scenario_steps). A
scenario is checked against the farm as it is (farm.config.scenario.check) before anything
is applied, then each step is a timer on the master's loop, on the monotonic clock, at
`start + play * length + step.at`, where `start` is when the scenario began (for `farm up
FILE`, when every server was ready). A step's `for` ends with another timer. Each step
started is one log line; `modbus_farm_scenario_step{step,name}` (steps numbered from 1, as in
the log, `farm scenario status` and the page) is 1 for the current step
(the last one started) and 0 for the others, so a dashboard can mark each step. A
`repeat` plays the timeline again from its end, after clearing the faults the last play
left on; `stop` cancels what is scheduled and undoes what was applied
(farm.master.scenario.steps).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from farm.config.scenario.check import check_scenario
from farm.config.scenario.model import Step, Timeline
from farm.master.scenario.steps import StepActions, StepFailed

log = logging.getLogger("farm")


class ScenarioPlayer:
    """Plays at most one scenario at a time on one farm."""

    def __init__(self, actions: StepActions, plan_fleets: Any, templates: Any) -> None:
        self.actions = actions
        self.fleets = plan_fleets
        self.templates = templates
        self.timeline: Timeline | None = None
        self.state = "idle"  # idle | playing | done | stopped
        self.start = 0.0
        self.play = 0  # which play of the timeline (repeat)
        self.current: int | None = None  # index of the last step started
        self.started: dict[int, float] = {}  # step index -> when it last started
        self.active: set[int] = set()  # steps whose `for` is running
        self.failed: dict[int, str] = {}  # step index -> why it could not act (last play)
        self.timers: list[asyncio.TimerHandle] = []
        self.tasks: set[asyncio.Task[None]] = set()

    # -- what the API and `farm up` call ----------------------------------------------

    def check(self, timeline: Timeline) -> None:
        """ConfigError unless the farm, as it is now, can play `timeline`."""
        check_scenario(timeline, self.fleets, self.templates, self.actions.counts())

    @property
    def playing(self) -> bool:
        return self.state == "playing"

    def begin(self, timeline: Timeline, start: float | None = None) -> None:
        """Play `timeline` from monotonic time `start` (default: now); check it first."""
        self.timeline = timeline
        self.state = "playing"
        self.start = time.monotonic() if start is None else start
        self.play, self.current = 0, None
        self.started.clear()
        self.active.clear()
        self.failed.clear()
        log.info(
            "scenario started: %d steps, %g s a play, %s",
            len(timeline.steps),
            timeline.length,
            "forever" if timeline.repeat is None else f"{timeline.repeat} play(s)",
        )
        self._schedule()

    async def stop(self) -> None:
        """End the scenario: nothing more starts, and what it applied is taken back."""
        if self.timeline is None:
            return
        self._cancel()
        await self.actions.undo()
        if self.state in ("playing", "done"):
            log.info("scenario stopped: its faults cleared, its changes undone")
        self.state = "stopped"
        self.active.clear()
        self.current = None

    async def close(self) -> None:
        """The farm is stopping: cancel timers and what is under way; undo nothing."""
        self._cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def view(self) -> dict[str, Any]:
        """The timeline with each step's state, as GET /api/v1/scenario shows it."""
        timeline = self.timeline
        now = time.monotonic()
        base = self.start + self.play * (timeline.length if timeline else 0.0)
        steps = []
        for step in timeline.steps if timeline else ():
            steps.append(
                {
                    "step": step.index + 1,  # numbered from 1, as people count
                    "name": step.name,
                    "action": step.action,
                    "at_s": step.at,
                    "for_s": step.duration,
                    "state": self._step_state(step),
                    "starts_in_s": round(max(0.0, base + step.at - now), 3),
                    "error": self.failed.get(step.index),
                }
            )
        return {**(self.summary() or {}), "steps": steps}

    def summary(self) -> dict[str, Any] | None:
        """State, play and the current step (for GET /api/v1/status)."""
        timeline = self.timeline
        if timeline is None:
            return None
        current = None if self.current is None else timeline.steps[self.current]
        return {
            "state": self.state,
            "seed": timeline.seed,
            "repeat": "forever" if timeline.repeat is None else timeline.repeat,
            "play": self.play + 1,
            "length_s": timeline.length,
            "elapsed_s": round(time.monotonic() - self.start, 3) if self.playing else None,
            "current": None
            if current is None
            else {"step": current.index + 1, "name": current.name},
        }

    def on_page(self) -> dict[str, Any] | None:
        """The step the fleet view's totals show while a scenario plays (None: none plays)."""
        timeline, current = self.timeline, self.current
        if timeline is None or not self.playing:
            return None
        shown: dict[str, Any] = {"step": "none started yet"}
        if current is not None:
            shown["step"] = f"{current + 1}/{len(timeline.steps)}: {timeline.steps[current].name}"
        if timeline.repeat != 1:
            shown["play"] = f"{self.play + 1} of {timeline.repeat or 'forever'}"
        return shown

    def step_marks(self) -> list[tuple[int, str, int]]:
        """(number from 1, name, 1 for the step started last else 0) of each step, for
        modbus_farm_scenario_step (farm.master.metrics.registry); empty before any play.
        Safe from the scrape's thread (reads a snapshot)."""
        timeline, current = self.timeline, self.current
        if timeline is None:
            return []
        on = self.state in ("playing", "done")
        return [
            (step.index + 1, step.name, int(step.index == current and on))
            for step in timeline.steps
        ]

    # -- the schedule ------------------------------------------------------------------

    def _step_state(self, step: Step) -> str:
        if step.index in self.active:
            return "active"
        if step.index in self.failed:
            return "failed"
        return "done" if step.index in self.started else "pending"

    def _schedule(self) -> None:
        """Timers for every step of the current play, and for the play's end."""
        timeline = self.timeline
        assert timeline is not None
        loop = asyncio.get_running_loop()
        base = self.start + self.play * timeline.length
        now = time.monotonic()
        for step in timeline.steps:
            delay = max(0.0, base + step.at - now)
            self.timers.append(loop.call_later(delay, self._fire, step))
        self.timers.append(loop.call_later(max(0.0, base + timeline.length - now), self._end))

    def _fire(self, step: Step) -> None:
        self._later(self._run(step))

    async def _run(self, step: Step) -> None:
        timeline = self.timeline
        assert timeline is not None
        self.current = step.index
        self.started[step.index] = time.monotonic()
        self.failed.pop(step.index, None)
        until = f" for {step.duration:g} s" if step.duration else ""
        log.info(
            "scenario step %d/%d at %g s: %s%s",
            step.index + 1,
            len(timeline.steps),
            step.at + self.play * timeline.length,
            step.name,
            until,
        )
        try:
            servers = await self.actions.run(step)
        except StepFailed as error:
            self.failed[step.index] = str(error)
            log.warning("scenario step %d (%s) could not act: %s", step.index + 1, step.name, error)
            return
        if step.duration:
            self.active.add(step.index)
            self.timers.append(
                asyncio.get_running_loop().call_later(step.duration, self._finish, step, servers)
            )

    def _finish(self, step: Step, servers: list[str]) -> None:
        self.active.discard(step.index)
        self._later(self.actions.end(step, servers))

    def _end(self) -> None:
        """One play is over: play again, or the scenario is done."""
        timeline = self.timeline
        assert timeline is not None
        if timeline.repeat is not None and self.play + 1 >= timeline.repeat:
            self.state = "done"
            log.info("scenario done: %d play(s)", self.play + 1)
            return
        self.play += 1
        self.actions.clear_faults()
        self.started.clear()
        log.info("scenario play %d begins", self.play + 1)
        self._schedule()

    def _cancel(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        for task in self.tasks:
            task.cancel()

    def _later(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
