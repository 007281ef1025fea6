"""The fleet view in a real browser: Debian's Chromium, headless, driven by Playwright's
Python package (pointed at /usr/bin/chromium; Playwright's own browser download is never
used), against a real farm of 500 servers in two fleets, with a token.

Each test ends with a screenshot in artifacts/ (printed with -s, kept out of git) and fails
on any console error or uncaught exception in the page.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import sync_playwright
from pymodbus.client import ModbusTcpClient
from pymodbus.pdu import ExceptionResponse

from farm.client import FarmClient
from tests.farmproc import HOST, FarmProcess, free_port, free_port_range, wait_for
from tests.tools import tool

pytestmark = pytest.mark.timeout(180)
CHROMIUM = shutil.which("chromium")
# Flags for a machine with no network and no display: nothing phones home, nothing waits.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
TOKEN = "page-test-token"
METERS, PLCS = 300, 200


@dataclass
class View:
    """A farm, and the fleet view open on it in a fresh headless Chromium."""

    farm: FarmProcess
    page: Any
    ports: dict[str, int]  # each fleet's first port
    problems: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)  # console errors a test provokes, once each

    def port(self, name: str) -> int:
        fleet, _, number = name.partition("-")
        return self.ports[fleet] + int(number)

    def js(self, expression: str) -> Any:
        return self.page.evaluate(expression)

    def until(self, expression: str, what: str, timeout: float = 20.0) -> Any:
        # Polled from here: Playwright's wait_for_function evaluates strings with eval(),
        # which the page's Content-Security-Policy forbids (as it should).
        return wait_for(lambda: self.js(expression), timeout, what, interval=0.1)

    def count(self, state: str) -> int:
        return int(self.js(f"document.querySelector('#f-states label.{state}').dataset.count"))

    def cells(self) -> int:
        return int(self.js("document.querySelector('#grid').dataset.cells"))

    def seq(self) -> int:
        return int(self.js("Number(document.body.dataset.seq || 0)"))


def plant(tmp_path: Path) -> tuple[FarmProcess, dict[str, int]]:
    """500 servers: 300 meters and 200 PLCs, each with a writable setpoint."""
    template = {
        "units": [{"unit_id": 1, "holding_registers": 20, "input_registers": 10}],
        "points": [
            {"name": "setpoint", "table": "holding_registers", "address": 2, "type": "int16",
             "scale": 0.1, "value": 21.5},
            {"name": "voltage", "table": "input_registers", "address": 0, "type": "float32",
             "behaviour": {"kind": "sine", "low": 228, "high": 232, "period_s": 60}},
        ],
    }  # fmt: skip
    fleets, ports = [], {}
    for name, count in (("meters", METERS), ("plcs", PLCS)):
        start = ports[name.rstrip("s")] = free_port_range(count)
        fleets.append(
            {
                "name": name,
                "template": "device",
                "count": count,
                "name_pattern": name.rstrip("s") + "-{i:04d}",
                "addressing": {"host": HOST, "port_start": start, "port_end": start + count - 1},
            }
        )
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump({"templates": {"device": template}, "fleets": fleets}))
    farm = FarmProcess(
        count=METERS + PLCS,
        workers=2,
        port_base=0,
        api_port=free_port(),
        file=str(path),
        extra=["--api-token", TOKEN],
    )
    return farm, ports


@pytest.fixture
def view(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[View]:
    # A missing browser is a failure, never a skip: scripts/test installs it.
    assert CHROMIUM is not None, (
        "chromium is not installed (scripts/test: apt-get install chromium)"
    )
    farm, ports = plant(tmp_path)
    farm.start()
    try:
        farm.wait_ready(timeout=90)
        with sync_playwright() as driver:
            context = driver.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),  # a fresh user-data dir
                executable_path=CHROMIUM,
                args=FLAGS,
                headless=True,
                viewport={"width": 1400, "height": 900},
            )
            try:
                page = context.new_page()
                opened = View(farm=farm, page=page, ports=ports)
                page.on("console", lambda m: _console(opened, m))
                page.on("pageerror", lambda e: opened.problems.append(f"page error: {e}"))
                page.goto(f"http://{HOST}:{farm.api_port}/")
                opened.until("document.body.dataset.link === 'live'", "the stream to open")
                yield opened
                ARTIFACTS.mkdir(exist_ok=True)
                shot = ARTIFACTS / f"{request.node.name}.png"
                page.screenshot(path=str(shot), full_page=True)
                print(f"screenshot: {shot}")
                assert not opened.problems, opened.problems
            finally:
                context.close()
    finally:
        code, _, stderr = farm.stop()
        assert code == 0, stderr


def _console(view: View, message: Any) -> None:
    if message.type not in ("error", "assert"):
        return
    for expected in view.expected:
        if expected in message.text:
            view.expected.remove(expected)  # Chromium logs every refused request: this one is ours
            return
    view.problems.append(f"console {message.type}: {message.text}")


def test_the_page_shows_the_fleet_and_follows_a_kill_9(view: View) -> None:
    view.until(f"document.querySelector('#grid').dataset.cells == {METERS + PLCS}", "500 cells")
    assert view.count("up") == METERS + PLCS
    assert view.js("document.getElementById('t-servers').textContent") == "500 / 500"
    assert view.js("[...document.querySelectorAll('#f-fleet option')].map(o => o.value)") == [
        "",
        "meters",
        "plcs",
    ]
    assert view.js("document.getElementById('t-scenario').textContent") == "none"

    # Filters: by fleet, by name (a glob or a part of one), by state.
    view.page.select_option("#f-fleet", "plcs")
    view.until(f"document.querySelector('#grid').dataset.cells == {PLCS}", "the plcs only")
    view.page.fill("#f-name", "plc-00[0-4]*")  # brackets are literal, * and ? are wildcards
    view.until("document.querySelector('#grid').dataset.cells == 0", "no match")
    view.page.fill("#f-name", "plc-01?5")
    view.until("document.querySelector('#grid').dataset.cells == 10", "plc-0105 ... plc-0195")
    view.page.select_option("#f-fleet", "")
    view.page.fill("#f-name", "")
    view.page.uncheck("#f-states input[value=up]")
    view.until("document.querySelector('#grid').dataset.cells == 0", "no server in another state")
    view.page.check("#f-states input[value=up]")
    view.until(f"document.querySelector('#grid').dataset.cells == {METERS + PLCS}", "all again")

    # kill -9 of a worker: its cells turn offline, then come back when it is replaced. The
    # page records every offline count it shows: the outage may last a single update.
    view.js(
        """() => {
        const label = document.querySelector('#f-states label.offline');
        window.offlineSeen = [];
        new MutationObserver(() => offlineSeen.push(Number(label.dataset.count)))
            .observe(label, {attributes: true, attributeFilter: ['data-count']});
    }"""
    )
    victim = view.farm.status()["workers"][0]
    os.kill(victim["pid"], signal.SIGKILL)
    view.until("Math.max(0, ...offlineSeen) > 0", "worker 0's cells to go offline")
    view.until(
        f"document.querySelector('#f-states label.up').dataset.count == {METERS + PLCS}",
        "every cell up again",
        timeout=30,
    )
    assert view.count("offline") == 0
    assert max(view.js("offlineSeen")) == victim["servers"]
    restarts = "document.querySelector('#workers tbody tr').children[5].textContent"
    view.until(f"{restarts} === '1'", "the restart in the workers table")
    seq = view.seq()
    view.until(f"Number(document.body.dataset.seq) > {seq + 2}", "ticks to keep coming")


def test_the_cells_follow_a_fleet_scaled_down_and_up(view: View) -> None:
    cells = "document.querySelector('#grid').dataset.cells"
    view.until(f"{cells} == {METERS + PLCS}", "500 cells")
    view.page.select_option("#f-fleet", "plcs")  # a filter the new layouts must keep
    view.until(f"{cells} == {PLCS}", "the plcs only")
    api = FarmClient.at(HOST, view.farm.api_port, token=TOKEN)
    for count in (PLCS - 50, PLCS):  # its config has ports for PLCS servers and no more
        api.scale("plcs", count)
        view.until(f"{cells} == {count}", f"{count} plc cells")
        assert view.js("document.getElementById('f-fleet').value") == "plcs"
    last = f"plc-{PLCS - 1:04d}"
    view.page.select_option("#f-fleet", "")
    view.until(f"{cells} == {METERS + PLCS}", "every cell again")
    assert view.js(f"window.farmView.stateOf('{last}')") == "up"  # a newcomer's cell

    # The totals show the step a scenario is at while it plays, and "none" once it stops.
    scenario = "document.getElementById('t-scenario').textContent"
    api.play_scenario(
        {
            "steps": [
                {
                    "name": "trip",
                    "at": "0s",
                    "for": "60s",
                    "fault": {"kind": "drop", "target": last},
                }
            ]
        }
    )
    view.until(f"{scenario} === 'step 1/1: trip'", "the scenario's step in the totals")
    api.stop_scenario()
    view.until(f"{scenario} === 'none'", "no scenario once it stopped")


def test_a_value_written_from_the_page_is_read_by_mbpoll(view: View) -> None:
    page = view.page
    view.until("window.farmView.cellCentre('meter-0007')", "meter-0007's cell")
    centre = view.js("window.farmView.cellCentre('meter-0007')")
    page.mouse.click(centre["x"], centre["y"])  # a click on its cell opens it
    row = "#points tbody tr[data-point=setpoint]"
    view.until(f"document.querySelector('{row} .value')?.textContent === '21.5'", "its points")
    assert view.js("document.querySelector('#server h2').textContent") == "meter-0007"

    page.fill(f"{row} input[name=value]", "42.5")
    page.click(f"{row} button")
    # The farm has a token: the page asks for it once, before its first change.
    view.until("document.getElementById('token-dialog').open", "the token dialog")
    page.fill("#token-dialog input", TOKEN)
    page.click("#token-dialog button[value=ok]")
    view.until(
        "document.getElementById('server-message').textContent.includes('set to 42.5')", "the write"
    )
    # mbpoll numbers registers from 1: reference 3 is the setpoint's address 2 (int16, x0.1).
    assert "[3]: \t425" in mbpoll(view.port("meter-0007"), "-t", "4", "-r", "3", "-c", "1")
    view.until(f"document.querySelector('{row} .value').textContent === '42.5'", "the value shown")
    # The panel also shows its units, and its requests per function code: mbpoll's FC 3 read.
    assert view.js("document.querySelector('#units li').textContent") == (
        "unit 1: 0 coils, 0 discrete inputs, 20 holding registers, 10 input registers"
    )
    view.until(
        "[...document.querySelectorAll('#requests tbody tr')].some(tr =>"
        " tr.children[0].textContent === '3' && Number(tr.children[2].textContent) >= 1)",
        "mbpoll's read in the requests per function code",
    )

    page.fill(f"{row} input[name=value]", "-7")  # the token is kept: no second question
    page.click(f"{row} button")
    view.until(
        "document.getElementById('server-message').textContent.includes('set to -7')", "again"
    )
    assert not view.js("document.getElementById('token-dialog').open")
    # -7.0 is -70 in an int16; mbpoll shows 16-bit registers unsigned.
    assert f"[3]: \t{65536 - 70}" in mbpoll(
        view.port("meter-0007"), "-t", "4", "-r", "3", "-c", "1"
    )

    page.fill(f"{row} input[name=value]", "forty")
    page.click(f"{row} button")
    view.until(
        "document.getElementById('server-message').textContent.includes('not a int16')", "refusal"
    )

    # Stop and start from the page: its port refuses connections, then serves the value again.
    page.click("#s-switch button[value=stop]")
    view.until("window.farmView.stateOf('meter-0007') === 'offline'", "the cell to go offline")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, view.port("meter-0007")), timeout=5).close()
    page.click("#s-switch button[value=start]")
    view.until("window.farmView.stateOf('meter-0007') === 'up'", "the cell to come back")
    assert f"[3]: \t{65536 - 70}" in mbpoll(
        view.port("meter-0007"), "-t", "4", "-r", "3", "-c", "1"
    )


def test_a_fault_applied_from_the_page_is_seen_by_a_modbus_client(view: View) -> None:
    page = view.page
    page.fill("#search", "plc-0004")
    page.press("#search", "Enter")  # search by name opens the server
    view.until("document.querySelector('#server h2').textContent === 'plc-0004'", "its panel")
    # The kinds come from the API's OpenAPI document.
    view.until("!document.getElementById('fault-form').hidden", "the fault form")
    kinds = view.js(
        "[...document.querySelectorAll('#fault-form select[name=kind] option')].map(o => o.value)"
    )
    assert {"delay", "exception", "drop", "offline", "garble", "slice", "reboot"} <= set(kinds)

    page.select_option("#fault-form select[name=kind]", "exception")
    page.fill("#fault-form .params [name=code]", "6")
    page.fill("#fault-form [name=duration]", "soon")  # not a duration: the API says so
    view.expected.append("status of 422")
    page.click("#fault-form button")
    view.until("document.getElementById('token-dialog').open", "the token dialog")
    page.fill("#token-dialog input", TOKEN)
    page.click("#token-dialog button[value=ok]")
    message = "document.getElementById('server-message')"
    view.until(
        f"{message}.classList.contains('error') && {message}.textContent.includes('duration')",
        "the refusal",
    )
    assert view.js("document.getElementById('t-faults').textContent") == "0"

    page.fill("#fault-form [name=duration]", "")  # until cleared
    page.click("#fault-form button")
    view.until(f"{message}.textContent.includes('applied: exception')", "the fault applied")
    view.until("window.farmView.stateOf('plc-0004') === 'faulted'", "the cell to turn faulted")
    view.until("document.getElementById('t-faults').textContent === '1'", "one active fault")
    view.until("document.querySelector('#active-faults li[data-fault]')", "the fault in the panel")
    assert "exception (code 6, until cleared)" in view.js(
        "document.querySelector('#active-faults li').textContent"
    )

    client = ModbusTcpClient(HOST, port=view.port("plc-0004"), timeout=3, retries=0)
    assert client.connect()
    try:
        answer = client.read_holding_registers(2, count=1, device_id=1)
        assert isinstance(answer, ExceptionResponse) and answer.exception_code == 6
        page.click("#active-faults li[data-fault] button")  # clear it from the page
        view.until(f"{message}.textContent.includes('cleared')", "the fault cleared")
        view.until("window.farmView.stateOf('plc-0004') !== 'faulted'", "the cell to leave faulted")
        assert client.read_holding_registers(2, count=1, device_id=1).registers == [215]
    finally:
        client.close()
    view.until("document.getElementById('t-faults').textContent === '0'", "no active fault")
    assert view.js("document.querySelector('#active-faults li').textContent") == "none"


def mbpoll(port: int, *args: str) -> str:
    command = [tool("mbpoll"), "-m", "tcp", "-a", "1", "-p", str(port), "-1", *args, HOST]
    done = subprocess.run(command, capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
