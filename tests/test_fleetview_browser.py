"""The fleet view in a real browser: Debian's Chromium, headless, driven by Playwright's
Python package (pointed at /usr/bin/chromium; Playwright's own browser download is never
used), against a real farm of 500 servers in two fleets, with a token.

Each test ends with a screenshot in artifacts/ (printed with -s, kept out of git) and fails
on any console error or uncaught exception in the page.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import time
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
from farm.config.faults.kinds import KINDS
from farm.config.faults.selection import pick_fraction
from tests.farmproc import HOST, FarmProcess, free_port, free_port_range, wait_for
from tests.tools import npm_file, tool

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


def shot(view: View, name: str) -> None:
    """A screenshot in the middle of a test (the fixture takes the last one)."""
    ARTIFACTS.mkdir(exist_ok=True)
    view.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_the_page_says_when_the_farm_is_unreachable_and_recovers(view: View) -> None:
    """SIGSTOP of the master: no event comes, and no error either. Within 3 s the whole page
    says so (banner with the time, grid dimmed, workers unknown), then recovers by itself."""
    view.until(f"document.querySelector('#grid').dataset.cells == {METERS + PLCS}", "500 cells")
    os.kill(view.farm.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        view.until("document.body.classList.contains('unreachable')", "the page to notice", 10)
        noticed = time.monotonic() - stopped
        banner = view.js("document.getElementById('unreachable').textContent")
        assert view.js("!document.getElementById('unreachable').hidden")
        assert re.search(r"farm unreachable since \d\d:\d\d:\d\d", banner), banner
        assert float(view.js("getComputedStyle(document.getElementById('grid')).opacity")) < 0.5
        states = view.js(
            "[...document.querySelectorAll('#workers tbody tr')].map(r => r.dataset.state)"
        )
        assert states and set(states) == {"unknown"}, states
        assert view.js("document.body.dataset.link") == "down"
        shot(view, "fleetview-unreachable")
    finally:
        os.kill(view.farm.pid, signal.SIGCONT)
    print(f"unreachable shown {noticed:.2f} s after SIGSTOP")
    assert noticed < 3.0
    view.until("!document.body.classList.contains('unreachable')", "the page to recover", 20)
    view.until("document.body.dataset.link === 'live'", "the stream live again")
    assert view.js("document.getElementById('unreachable').hidden")
    view.until(
        f"document.querySelector('#f-states label.up').dataset.count == {METERS + PLCS}", "all up"
    )


def luminance(colour: str) -> float:
    """WCAG relative luminance of '#rrggbb' or 'rgb(r g b)'."""
    if colour.startswith("#"):
        channels = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    else:
        channels = [int(part) for part in re.findall(r"\d+", colour)[:3]]
    linear = [
        c / 255 / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4
        for c in channels
    ]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def axe(view: View) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not view.js("typeof window.axe === 'object'"):
        # Evaluated through the DevTools protocol: the page's CSP (no inline script) stays on.
        view.page.evaluate(npm_file("axe-core", "axe.min.js").read_text() + "\n;0")
    found: list[dict[str, Any]] = view.page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
            .filter(v => ['serious', 'critical'].includes(v.impact))
            .map(v => ({id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))"""
    )
    return found


def test_states_without_colour_and_no_serious_axe_violation(view: View) -> None:
    view.until(f"document.querySelector('#grid').dataset.cells == {METERS + PLCS}", "500 cells")
    palette = view.js("window.farmView.palette")
    background = palette["background"]
    assert len(set(palette["shapes"])) == 4  # each state its own shape: colour is not needed
    assert len(set(palette["states"])) == 4
    # Every state at every request rate keeps 3:1 against the background (WCAG 1.4.11).
    for code, shade in enumerate(palette["shades"]):
        assert contrast(shade, background) >= 3.0, (code, shade, contrast(shade, background))
    assert axe(view) == []
    view.page.click("#view-toggle")  # the grid as text: a table of the filtered servers
    view.until("document.querySelectorAll('#server-table tbody tr').length === 500", "500 rows")
    view.page.select_option("#f-fleet", "plcs")
    view.until("document.querySelectorAll('#server-table tbody tr').length === 200", "the plcs")
    first = "document.querySelector('#server-table tbody tr')"
    assert view.js(f"[...{first}.children].map(c => c.textContent)")[:4] == [
        "plc-0000", "plcs", view.js(f"{first}.children[2].textContent"), "up",
    ]  # fmt: skip
    assert view.count("up") == PLCS  # the counts follow the fleet filter
    assert axe(view) == []
    shot(view, "fleetview-table")
    view.page.click("#server-table tbody tr:nth-child(8) button")  # plc-0007's panel
    view.until("document.querySelector('#server h2').textContent === 'plc-0007'", "its panel")
    view.until("document.querySelector('#points tbody tr[data-point=setpoint]')", "its points")
    view.until("document.querySelectorAll('#charts figure').length === 3", "its charts")
    assert axe(view) == []


# A cell's pixels as the canvas holds them: [r, g, b, a, r, g, b, a, ...], row by row.
CELL_PIXELS_JS = """(name) => {
    const box = window.farmView.cellBox(name);
    const ratio = window.devicePixelRatio || 1;
    const context = document.getElementById('grid').getContext('2d');
    const [x, y, size] = [box.x, box.y, box.size].map((v) => Math.round(v * ratio));
    return [size, Array.from(context.getImageData(x, y, size, size).data)];
}"""
# Every kind's letter (and "+") drawn as in a 6 px cell of a 10,000-server grid, in the page's
# own code: the dark pixels of each, as a string of 0 and 1.
SMALL_MARKS_JS = """async () => {
    const marks = await import('/web/marks.js');
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = 6;
    const context = canvas.getContext('2d', {willReadFrequently: true});
    const letters = [...window.farmView.palette.drawable];
    return Object.fromEntries(letters.map((letter) => {
        context.fillStyle = '#ffffff';
        context.fillRect(0, 0, 6, 6);
        marks.drawMark(context, letter, 0, 0, 6, '#000000');
        const data = context.getImageData(0, 0, 6, 6).data;
        let bits = '';
        for (let i = 0; i < data.length; i += 4) bits += data[i] < 128 ? '1' : '0';
        return [letter, bits];
    }));
}"""

# The page's own Grid, on a canvas of its own, with 10,000 cells: the first a delay's, the
# second a garble's, the third held offline by a delay, the fourth up; each cell's dark
# pixels (as 0 and 1) and its size, with the cells as they are at that count, then large.
GRID_JS = """async () => {
    const {Grid} = await import('/web/grid.js');
    const box = document.createElement('div');
    box.style.width = '1400px';
    const canvas = document.createElement('canvas');
    box.append(canvas);
    document.body.append(box);
    const grid = new Grid(canvas);
    const cells = 10000;
    grid.setLayout({
        cells, names: Array.from({length: cells}, (_, i) => `d-${i}`),
        groups: [{fleet: 'f', start: 0, count: cells}],
        fault_kinds: [{kind: 'delay', mark: 'D'}, {kind: 'garble', mark: 'G'}],
    });
    const codes = new Uint8Array(cells);
    codes.set([2 << 3, 2 << 3, 3 << 3]);
    grid.setCodes(codes);
    const more = [];  // and, for the picture, more cells with one kind or both
    for (let cell = 40; cell < 2000; cell += 37) more.push(cell, 1 + (cell % 3));
    more.forEach((v, i) => { if (i % 2 === 0) codes[v] = 2 << 3; });
    grid.setCodes(codes);
    grid.applyFaults([0, 1, 1, 2, 2, 1, ...more], true);
    const read = () => {
        grid.draw();
        const context = canvas.getContext('2d');
        return [0, 1, 2, 3].map((cell) => {
            const size = grid.pitch - 2;
            const data = context.getImageData(grid.x[cell], grid.y[cell], size, size).data;
            let bits = '';
            for (let i = 0; i < data.length; i += 4) {
                bits += data[i] + data[i + 1] + data[i + 2] < 3 * 40 ? '1' : '0';
            }
            return [size, bits];
        });
    };
    const picture = () => {  // the first rows, as the page draws them, for the artifacts
        const copy = document.createElement('canvas');
        copy.width = canvas.width;
        copy.height = Math.min(canvas.height, 300);
        copy.getContext('2d').drawImage(canvas, 0, 0);
        return copy.toDataURL('image/png');
    };
    const small = read();
    const pictures = [picture()];
    grid.setLarge(true);
    const large = read();
    pictures.push(picture());
    box.remove();
    return [[small, large], pictures];
}"""


def cell_pixels(view: View, name: str) -> list[tuple[int, int, int]]:
    _, data = view.page.evaluate(CELL_PIXELS_JS, name)
    return [(data[i], data[i + 1], data[i + 2]) for i in range(0, len(data), 4)]


def dark(pixels: list[tuple[int, int, int]]) -> str:
    """Which pixels of a cell are the background's colour (a letter on a filled square)."""
    return "".join("1" if luminance("rgb({} {} {})".format(*p)) < 0.02 else "0" for p in pixels)


def test_fault_kinds_in_the_cells_the_table_and_the_legend(view: View) -> None:
    """Servers under different fault kinds look different inside their cells (read back
    from the canvas's pixels), not by colour: each its kind's letter, "+" for several kinds,
    the letter inside the hollow square of a server a fault holds offline. The table names
    the kinds, the legend has an entry per kind, and axe-core finds nothing serious."""
    page = view.page
    view.until(f"document.querySelector('#grid').dataset.cells == {METERS + PLCS}", "500 cells")
    api = FarmClient.at(HOST, view.farm.api_port, token=TOKEN)
    api.fault("delay", "meter-0003", ms=1)
    api.fault("garble", "meter-0004", probability=0.01)
    api.fault("exception", "plc-0010", code=6, probability=0.01)
    api.fault("drop", "plc-0010", probability=0.01)
    api.fault("offline", "plc-0011")
    marks = {"meter-0003": "D", "meter-0004": "G", "plc-0010": "+", "plc-0011": "O"}
    for name, mark in marks.items():
        view.until(f"window.farmView.markOf('{name}') === '{mark}'", f"{name}'s {mark}")
    assert view.js("window.farmView.kindsOf('plc-0010')") == ["exception", "drop"]
    assert view.js("window.farmView.stateOf('plc-0011')") == "offline"
    assert view.js("window.farmView.markOf('meter-0005')") == ""
    seq = view.seq()
    view.until(f"Number(document.body.dataset.seq) > {seq + 1}", "the cells drawn")

    # The pixels: a delay's cell and a garble's differ, each from a cell without faults
    # too, and the letter keeps 3:1 against its square (the faulted shade's own contrast).
    pixels = {name: cell_pixels(view, name) for name in [*marks, "meter-0005"]}
    patterns = {name: dark(found) for name, found in pixels.items()}
    assert "1" not in patterns["meter-0005"]  # a plain square: no dark pixel inside
    for name in ("meter-0003", "meter-0004", "plc-0010"):
        assert patterns[name].count("1") >= 6, (name, patterns[name])
    assert len({patterns[name] for name in ("meter-0003", "meter-0004", "plc-0010")}) == 3
    for name in ("meter-0003", "meter-0004"):
        colours = sorted(set(pixels[name]), key=lambda p: luminance("rgb({} {} {})".format(*p)))
        ratio = contrast("rgb({} {} {})".format(*colours[0]), "rgb({} {} {})".format(*colours[-1]))
        assert ratio >= 3.0, (name, colours[0], colours[-1])
    # The offline one: a hollow square with a grey letter inside, unlike a faulted cell's
    # filled square: its outer rows are grey, the corners inside its outline dark.
    size = round(len(pixels["plc-0011"]) ** 0.5)
    hollow, filled = patterns["plc-0011"], patterns["meter-0003"]
    assert "1" not in hollow[:size] + hollow[-size:], hollow
    corners = [row * size + column for row in (2, size - 3) for column in (2, size - 3)]
    assert [hollow[i] for i in corners] == ["1"] * 4, hollow
    assert [filled[i] for i in corners] == ["0"] * 4, filled
    inside = [hollow[row * size + col] for row in range(3, size - 3) for col in range(3, size - 3)]
    assert "0" in inside and "1" in inside, hollow  # the letter, in the dark inside
    palette = view.js("window.farmView.palette")
    for state, colour in enumerate(palette["marks"]):
        base = palette["background"] if state == 3 else palette["shades"][state * 8]
        assert contrast(colour, base) >= 3.0, (state, colour, base)

    # At 10,000 servers a cell is 6 px: every kind's letter has its own 3 x 5 glyph.
    kinds = view.js(
        "(() => { const l = []; document.querySelectorAll('#kind-legend .kind[data-kind]').forEach(e => l.push([e.dataset.kind, e.querySelector('.mark').textContent])); return l; })()"
    )
    small = view.page.evaluate(SMALL_MARKS_JS)
    letters = [mark for _, mark in kinds]
    assert set(letters) <= set(small) and "+" in small
    assert len({small[letter] for letter in [*letters, "+"]}) == len(letters) + 1

    # And in the page's own grid at 10,000 cells: 6 px cells with the 3 x 5 letters, then
    # 14 px ones when "large cells" is on.
    drawn, pictures = view.page.evaluate(GRID_JS)
    ARTIFACTS.mkdir(exist_ok=True)
    for picture, name in zip(pictures, ("small", "large"), strict=True):
        png = base64.b64decode(picture.partition(",")[2])
        (ARTIFACTS / f"fleetview-10000-cells-{name}.png").write_bytes(png)
    for cells, size in zip(drawn, (6, 14), strict=True):
        (_, delay), (_, garble), (_, offline), (_, up) = cells
        assert {each[0] for each in cells} == {size}, cells
        assert "1" not in up and delay != garble and delay.count("1") >= 5, cells
        # Not filled: a 6 px cell shows the letter alone, a 14 px one inside a 2 px outline.
        corner = 0 if size == 6 else 2 * size + 2
        assert (offline[corner], delay[corner]) == ("1", "0"), cells
    page.click("#cells-toggle")
    assert view.js("document.getElementById('cells-toggle').getAttribute('aria-pressed')") == "true"

    # The legend: one entry per kind of the farm's registry, and one for several.
    assert [kind for kind, _ in kinds] == list(KINDS)
    assert len(set(letters)) == len(KINDS)
    assert "several kinds" in view.js("document.getElementById('kind-legend').textContent")
    assert axe(view) == []
    shot(view, "fleetview-fault-kinds")

    # The text alternative: the table names each server's kinds.
    page.click("#view-toggle")
    page.fill("#f-name", "*-001?")
    rows = "[...document.querySelectorAll('#server-table tbody tr')]"
    view.until(f"{rows}.length === 20", "the -001x servers as rows")
    table = view.js(
        f"Object.fromEntries({rows}.map(r => [r.children[0].textContent, [r.dataset.kinds, r.children[4].textContent]]))"
    )
    assert table["plc-0010"] == ["exception drop", "E exception, X drop"], table
    assert table["plc-0011"] == ["offline", "O offline"], table
    assert table["meter-0012"] == ["", ""], table
    page.fill("#f-name", "meter-000?")
    view.until(f"{rows}.length === 10", "the meter-000x servers")
    table = view.js(
        f"Object.fromEntries({rows}.map(r => [r.children[0].textContent, r.dataset.kinds]))"
    )
    assert (table["meter-0003"], table["meter-0004"]) == ("delay", "garble"), table
    assert axe(view) == []
    shot(view, "fleetview-fault-kinds-table")


def test_search_in_name_order_with_arrows_escape_and_the_token_on_enter(view: View) -> None:
    page = view.page
    view.until(f"document.querySelector('#grid').dataset.cells == {METERS + PLCS}", "500 cells")
    page.fill("#search", "-001")
    suggestions = "[...document.querySelectorAll('#suggestions li')].map(li => li.textContent)"
    view.until(f"{suggestions}.length === 8", "eight suggestions")
    assert view.js(suggestions) == [f"meter-001{i}" for i in range(8)]
    page.press("#search", "ArrowDown")
    page.press("#search", "ArrowDown")
    assert view.js("document.querySelector('#suggestions li[aria-selected=true]').textContent") == (
        "meter-0011"
    )
    page.press("#search", "Enter")
    view.until("document.querySelector('#server h2').textContent === 'meter-0011'", "its panel")
    view.until("!document.getElementById('server').hidden", "the panel open")
    page.keyboard.press("Escape")
    view.until("document.getElementById('server').hidden", "Escape to close the panel")
    assert view.js("location.hash") == ""

    # The token dialog takes Enter as "use it", not as "cancel".
    page.fill("#search", "meter-0011")
    page.press("#search", "Enter")
    row = "#points tbody tr[data-point=setpoint]"
    view.until(f"document.querySelector('{row} .value')?.textContent === '21.5'", "its points")
    assert view.js(f"document.querySelector('{row} button').getAttribute('aria-label')") == (
        "set setpoint"
    )
    page.fill(f"{row} input[name=value]", "30")
    page.click(f"{row} button")
    view.until("document.getElementById('token-dialog').open", "the token dialog")
    page.fill("#token-dialog input", TOKEN)
    page.press("#token-dialog input", "Enter")
    view.until(
        "document.getElementById('server-message').textContent.includes('set to 30')", "the write"
    )


def test_the_farms_faults_from_the_page(view: View) -> None:
    page = view.page
    api = FarmClient.at(HOST, view.farm.api_port, token=TOKEN)
    page.click("#faults-toggle")
    form = "#farm-fault-form"
    view.until(f"document.querySelectorAll('{form} select[name=kind] option').length > 5", "kinds")
    page.select_option(f"{form} select[name=kind]", "exception")
    assert view.js(f"!!document.querySelector('{form} .params [name=code]')")
    page.select_option(f"{form} select[name=kind]", "delay")  # only delay's own fields now
    assert not view.js(f"!!document.querySelector('{form} .params [name=code]')")
    labels = view.js(
        f"[...document.querySelectorAll('{form} .params label')].map(l => l.textContent.trim())"
    )
    assert "time (ms)" in labels and "jitter (ms)" in labels, labels
    assert labels[-1].startswith("only clients whose TLS certificate"), labels  # role: last

    # A delay on a seeded 10% of the plcs fleet.
    page.select_option(f"{form} [name=target-kind]", "fleet")
    page.select_option(f"{form} [name=fleet]", "plcs")
    page.fill(f"{form} [name=fraction]", "0.1")
    page.fill(f"{form} [name=seed]", "7")
    page.fill(f"{form} .params [name=ms]", "50")
    page.click(f"{form} button:text('apply')")
    view.until("document.getElementById('token-dialog').open", "the token dialog")
    page.fill("#token-dialog input", TOKEN)
    page.press("#token-dialog input", "Enter")
    message = "document.getElementById('farm-fault-message').textContent"
    view.until(f"{message}.includes('applied: delay on 20 servers')", "the fault applied")
    (fault,) = api.faults()
    plcs = [f"plc-{i:04d}" for i in range(PLCS)]
    assert sorted(fault.servers) == sorted(pick_fraction(plcs, 0.1, 7))

    # A drop on the names a pattern picks.
    page.select_option(f"{form} [name=target-kind]", "glob")
    page.fill(f"{form} [name=glob]", "meter-000*")
    page.fill(f"{form} [name=fraction]", "")
    page.select_option(f"{form} select[name=kind]", "drop")
    page.click(f"{form} button:text('apply')")
    view.until(f"{message}.includes('applied: drop on 10 servers')", "the second fault")
    items = "document.querySelectorAll('#fault-list li[data-fault]').length"
    view.until(f"{items} === 2", "both faults listed")
    view.until("document.getElementById('t-faults').textContent === '2'", "two active faults")
    shot(view, "fleetview-farm-faults")
    page.click("#fault-list li[data-fault] button")  # clear the first one
    view.until(f"{items} === 1", "one left")
    page.click("#clear-all")
    view.until(f"{items} === 0", "none left")
    assert api.faults() == []


def test_a_servers_panel_latency_history_value_faults_and_its_end(view: View) -> None:
    page = view.page
    api = FarmClient.at(HOST, view.farm.api_port, token=TOKEN)
    name = f"plc-{PLCS - 1:04d}"
    client = ModbusTcpClient(HOST, port=view.port(name), timeout=3, retries=0)
    assert client.connect()
    try:
        for _ in range(20):
            assert not client.read_holding_registers(2, count=1, device_id=1).isError()
        assert not client.write_register(2, 235, device_id=1).isError()  # setpoint 23.5
    finally:
        client.close()
    api.fault("nan", name, point="voltage")  # a value fault: NaN, shown as NaN and marked
    page.fill("#search", name)
    page.press("#search", "Enter")
    view.until(f"document.querySelector('#server h2').textContent === '{name}'", "its panel")
    latency = "document.querySelector('#s-summary .latency').textContent"
    view.until(f"/\\d+(\\.\\d+)? (µs|ms) \\/ /.test({latency})", "its latency p50 / p99")
    voltage = "document.querySelector('#points tr[data-point=voltage] .value').textContent"
    view.until(f"{voltage} === 'NaN nan fault'", "NaN, marked as a fault's")
    view.until("document.querySelectorAll('#charts figure').length === 3", "three charts")
    # What the system under test did to it: its client, and its write.
    view.until(
        "[...document.querySelectorAll('#clients li')].some(li => li.textContent.startsWith('127.0.0.1:'))",
        "the client that polled it",
    )
    view.until(
        "[...document.querySelectorAll('#writes li')].some(li => li.textContent.includes('setpoint = 23.5'))",
        "its write",
    )
    shot(view, "fleetview-panel")

    # A server scaled away: the panel says so once and stops asking.
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url) if name in request.url else None)
    view.expected.extend(["status of 404"] * 5)  # the one refresh that finds it gone
    api.scale("plcs", PLCS - 1)
    message = "document.getElementById('server-message').textContent"
    view.until(f"{message}.includes('no longer in the farm')", "the panel to say it is gone")
    settled = len(asked)
    time.sleep(3)  # three refresh periods: none may come (nothing to poll for)
    assert len(asked) == settled, asked[settled:]
    view.expected.clear()  # fewer 404s than five is as good

    # A stopped server says why it is down; an error that no longer holds clears.
    api.stop("plc-0003")
    page.fill("#search", "plc-0003")
    page.press("#search", "Enter")
    reason = "document.getElementById('s-reason')"
    view.until(f"!{reason}.hidden && {reason}.textContent.startsWith('down: ')", "the reason")
    api.start("plc-0003")


def mbpoll(port: int, *args: str) -> str:
    command = [tool("mbpoll"), "-m", "tcp", "-a", "1", "-p", str(port), "-1", *args, HOST]
    done = subprocess.run(command, capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
