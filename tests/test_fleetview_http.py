"""The fleet view over real HTTP on a real farm: the page and its files, the event stream as
a browser's EventSource reads it, and a server's counters against a real Modbus client."""

from __future__ import annotations

import base64
import http.client
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient

from farm.client import FarmClient
from tests.conftest import start_farm
from tests.farmproc import HOST, FarmProcess, scalable_farm, wait_for

pytestmark = pytest.mark.timeout(120)


class EventStream:
    """GET /api/v1/view/stream, read event by event as an EventSource would."""

    def __init__(self, farm: FarmProcess) -> None:
        self.connection = http.client.HTTPConnection(HOST, farm.api_port, timeout=10)
        self.connection.request("GET", "/api/v1/view/stream")
        self.response = self.connection.getresponse()

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        fields: dict[str, str] = {}
        while line := self.response.readline():
            text = line.decode().rstrip("\n")
            if text:
                key, _, value = text.partition(": ")
                fields[key] = value
            elif "event" in fields:
                yield fields["event"], json.loads(fields["data"])
                fields = {}

    def close(self) -> None:
        self.connection.close()


def get(farm: FarmProcess, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{farm.api_port}{path}", timeout=5) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_the_page_and_its_files_come_from_the_package(farm: FarmProcess) -> None:
    status, headers, body = get(farm, "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    # Nothing from elsewhere: no CDN, no inline script.
    assert headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert b'<script type="module" src="/web/app.js">' in body
    assert b'data-token-required="false"' in body
    for name, kind in [
        ("app.js", "text/javascript"),
        ("grid.js", "text/javascript"),
        ("app.css", "text/css"),
    ]:
        status, headers, body = get(farm, f"/web/{name}")
        assert (status, headers["Content-Type"].split(";")[0]) == (200, kind)
        assert b"http://" not in body and b"https://" not in body
    status, _, body = get(farm, "/web/..%2Fapi.py")
    assert status == 404
    assert "no file" in json.loads(body)["error"]


def test_the_stream_starts_with_the_layout_and_follows_a_real_client(farm: FarmProcess) -> None:
    stream = EventStream(farm)
    try:
        assert stream.response.getheader("Content-Type") == "text/event-stream"
        events = iter(stream)
        name, layout = next(events)
        assert name == "layout"
        assert layout["cells"] == 20
        assert layout["names"] == [f"device-{i:04d}" for i in range(20)]  # in name order
        assert [(g["fleet"], g["count"]) for g in layout["groups"]] == [("default", 20)]
        assert sorted(layout["workers"]) == [0] * 10 + [1] * 10
        name, snapshot = next(events)
        assert name == "snapshot"
        codes = base64.b64decode(snapshot["codes"])
        assert len(codes) == 20
        assert {code >> 3 for code in codes} == {0}  # all up
        assert snapshot["totals"]["servers_ready"] == 20

        cell = layout["names"].index("device-0003")
        client = ModbusTcpClient(HOST, port=farm.port(3))
        assert client.connect()
        try:
            for _ in range(30):
                assert not client.read_holding_registers(0, count=2, device_id=1).isError()
            for _ in range(4):
                assert not client.read_input_registers(0, count=2, device_id=1).isError()
            assert client.read_holding_registers(5000, count=2, device_id=1).isError()
            deadline = time.monotonic() + 15
            busy = None
            for name, tick in events:
                assert name == "tick"
                assert time.monotonic() < deadline, "device-0003 never turned erroring and busy"
                pairs = dict(zip(tick["cells"][::2], tick["cells"][1::2], strict=True))
                if cell in pairs and pairs[cell] >> 3 == 1:  # erroring: it answered an exception
                    busy = pairs[cell] & 7
                    break
            assert busy is not None and busy >= 1
            counters = json.loads(get(farm, "/api/v1/servers/device-0003/counters")[2])
        finally:
            client.close()
    finally:
        stream.close()
    assert counters["requests"] == {"3": 31, "4": 4}
    assert counters["exceptions"] == {"2": 1}
    assert counters["address"] == f"{HOST}:{farm.port(3)}"
    assert (counters["fleet"], counters["worker"]) == ("default", 1)


def test_the_stream_carries_each_faulted_servers_kinds(farm: FarmProcess) -> None:
    """Two faults of different kinds on different servers, a third on one of them: the
    snapshot's masks name each server's kinds; a cleared fault's kind leaves its cell."""
    api = FarmClient.at(HOST, farm.api_port)
    delay = api.fault("delay", "device-0001", ms=5)
    api.fault("garble", "device-0002")
    api.fault("drop", "device-0002", probability=0.01)
    stream = EventStream(farm)
    try:
        events = iter(stream)
        _, layout = next(events)
        kinds = [each["kind"] for each in layout["fault_kinds"]]
        marks = {each["kind"]: each["mark"] for each in layout["fault_kinds"]}
        assert (marks["delay"], marks["garble"], marks["drop"]) == ("D", "G", "X")

        def named(pairs: list[int]) -> dict[str, set[str]]:
            return {
                layout["names"][cell]: {k for i, k in enumerate(kinds) if mask >> i & 1}
                for cell, mask in zip(pairs[::2], pairs[1::2], strict=True)
            }

        # A page that opens while the producer runs gets the state of its last tick (at
        # most one interval old): what changed since comes in the next ticks.
        _, snapshot = next(events)
        shown = named(snapshot["faults"])
        wanted = {"device-0001": {"delay"}, "device-0002": {"garble", "drop"}}
        deadline = time.monotonic() + 10
        while shown != wanted:
            assert time.monotonic() < deadline, shown
            shown.update(named(next(events)[1]["faults"]))
        api.clear_fault(delay.id)
        wanted["device-0001"] = set()
        while shown != wanted:
            assert time.monotonic() < deadline + 10, f"the delay's end never came: {shown}"
            shown.update(named(next(events)[1]["faults"]))
    finally:
        stream.close()
        api.clear_faults()


def test_counters_of_an_unknown_server(farm: FarmProcess) -> None:
    status, _, body = get(farm, "/api/v1/servers/nope/counters")
    assert status == 404
    assert "no server named 'nope'" in json.loads(body)["error"]


def test_open_streams_do_not_hold_the_stop_up() -> None:
    running = start_farm(4)
    try:
        running.wait_ready()
        streams = [EventStream(running) for _ in range(3)]
        for stream in streams:
            assert next(iter(stream))[0] == "layout"
        assert running.process is not None
        running.process.send_signal(signal.SIGTERM)
        for stream in streams:  # each ends: the page's EventSource then says reconnecting
            assert all(name in ("snapshot", "tick") for name, _ in stream)
            stream.close()
        _, stderr = running.process.communicate(timeout=10)  # one SIGTERM: no second one
        assert running.process.returncode == 0, stderr
    finally:
        running.kill()


def test_the_stream_follows_a_fleet_scaled_up_and_down() -> None:
    running = scalable_farm(4, room=10)
    stream = EventStream(running)
    try:
        events = iter(stream)
        name, layout = next(events)
        assert (name, layout["cells"]) == ("layout", 4)
        api = FarmClient.at(HOST, running.api_port)
        for count in (9, 2):
            api.scale("default", count)
            deadline = time.monotonic() + 15
            name, data = next(events)
            while name != "layout":  # the old layout's deltas until the new one
                assert time.monotonic() < deadline, f"no layout of {count} cells"
                name, data = next(events)
            assert data["cells"] == count
            assert sorted(data["names"]) == [f"device-{i:04d}" for i in range(count)]
            assert sum(group["count"] for group in data["groups"]) == count
            name, snapshot = next(events)  # then every cell of the new layout once
            assert name == "snapshot"
            assert len(base64.b64decode(snapshot["codes"])) == count
            name, tick = next(events)  # and deltas continue from it
            assert (name, tick["seq"]) == ("tick", snapshot["seq"] + 1)
    finally:
        stream.close()
        code, _, stderr = running.stop()
    assert code == 0, stderr


def test_a_server_scaled_away_is_404_and_history_counts_what_it_served() -> None:
    """With no page open the view's places are as of the last page: a server scaled away
    since is 'no server', not a 500; a server's history has its requests of the last
    interval, and its counters the latency percentiles of its histogram."""
    running = scalable_farm(3, room=3)
    try:
        client = ModbusTcpClient(HOST, port=running.port(0))
        assert client.connect()
        for _ in range(30):
            assert not client.read_holding_registers(0, count=1).isError()
        client.close()
        counted = running.api("/api/v1/servers/device-0000/counters")
        assert 0 < counted["latency_p50_s"] <= counted["latency_p99_s"] < 1.0, counted
        for quantile in ("latency_p50_s", "latency_p99_s"):  # an estimate, said as one
            assert float(f"{counted[quantile]:.3g}") == counted[quantile], counted
        wait_for(
            lambda: sum(running.api("/api/v1/servers/device-0000/history")["requests_per_s"]),
            15,
            "a history sample with the reads",
        )
        history = running.api("/api/v1/servers/device-0000/history")
        assert history["interval_s"] == 5.0
        assert sum(history["requests_per_s"]) * history["interval_s"] == pytest.approx(30, abs=1)
        assert len(history["latency_s"]) == len(history["errors_per_s"]) <= 60
        FarmClient.at(HOST, running.api_port).scale("default", 2)
        for path in ("counters", "history"):
            status, body = running.http("GET", f"/api/v1/servers/device-0002/{path}")
            assert status == 404 and "no server named 'device-0002'" in body["error"], body
    finally:
        code, _, stderr = running.stop()
    assert code == 0, stderr
