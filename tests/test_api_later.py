"""The control API in two parts (farm.master.api): status, ready and shutdown answer from the
start, and the rest (its pydantic models, the fault kinds, /metrics, the fleet view) is
loaded once every server is up or at the first request for it, which waits for it and is
answered in full.

Each test runs a real master (its workers, its API on free ports) in a subprocess of its
own, so that what is in that process's sys.modules says what the master loaded, and when.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from tests.farmproc import free_port, free_port_range

COMMON = """
import asyncio, contextlib, json, sys, threading, urllib.error, urllib.request
import uvloop
from farm.cli.validate import make_plan
from farm.master.options import MasterOptions

API, BASE, METRICS = {api}, {base}, {metrics}
REST = ("pydantic", "prometheus_client", "farm.master.wiring", "farm.master.fleetview.view")
found = {{}}

def loaded():
    return [name for name in REST if name in sys.modules]

def get(path, port=API, method="GET"):
    request = urllib.request.Request(f"http://127.0.0.1:{{port}}{{path}}", method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            json_body = "json" in answer.headers["Content-Type"]
            return answer.status, json.loads(answer.read()) if json_body else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())

plan = make_plan(None, 4, "127.0.0.1", BASE, 2)
options = MasterOptions(api_port=API, metrics_port=METRICS)
"""

# `farm up` as it runs: what the master has loaded when it says it is ready, then `probe`
# (in a thread), then a shutdown through the API.
SERVE = """
from farm.master.run import serve

async def main():
    def on_ready(summary):
        found["at_ready"] = loaded()

        def probe():
{probe}
            get("/api/v1/shutdown", method="POST")

        threading.Thread(target=probe, daemon=True).start()

    await serve(plan, options, on_ready=on_ready)

uvloop.run(main())
print(json.dumps(found))
"""

# The API's first part over a ready supervisor, with nothing else asking for the rest.
FIRST_PART = """
from farm.master.api import open_api
from farm.master.supervision.listeners import bind_all
from farm.master.supervision.supervisor import Supervisor, SupervisorOptions

async def main():
    supervisor = Supervisor(plan, bind_all(plan.servers()), SupervisorOptions())
    async with contextlib.AsyncExitStack() as cleanup:
        cleanup.push_async_callback(supervisor.stop)
        await supervisor.start()
        await open_api(supervisor, options, lambda: None, None, cleanup, True)
        found["status"] = await asyncio.to_thread(get, "/api/v1/status")
        found["ready"] = await asyncio.to_thread(get, "/api/v1/ready")
        found["after_status"] = loaded()
        found["servers"] = await asyncio.to_thread(get, "/api/v1/servers")
        found["after_servers"] = loaded()

uvloop.run(main())
print(json.dumps(found))
"""


def run_master(script: str, probe: str = "") -> dict[str, Any]:
    code = COMMON.format(api=free_port(), base=free_port_range(4), metrics=free_port())
    code += script.replace("{probe}", textwrap.indent(textwrap.dedent(probe), " " * 12))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=90, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


@pytest.mark.timeout(120)
def test_status_and_ready_answer_without_the_rest_of_the_api() -> None:
    found = run_master(FIRST_PART)
    code, status = found["status"]
    assert code == 200 and status["servers_ready"] == status["servers_total"] == 4, status
    assert status["ready"] is True and status["scenario"] is None, status
    assert len(status["workers"]) == 2 and status["workers"][0]["requests"] == 0, status
    assert found["ready"] == [200, {"ready": True, "servers_ready": 4, "servers_total": 4}]
    assert found["after_status"] == [], found
    # The first request for the rest waits for it to load, and is answered in full.
    code, servers = found["servers"]
    assert code == 200 and len(servers["servers"]) == 4, servers
    assert "farm.master.wiring" in found["after_servers"], found


@pytest.mark.timeout(120)
def test_a_farm_is_ready_before_it_loads_the_rest_and_then_serves_all_of_it() -> None:
    found = run_master(
        SERVE,
        """
        found["servers"] = get("/api/v1/servers")[0]
        found["metrics"] = get("/metrics", METRICS)[0]
        found["missing"] = get("/api/v1/no-such-thing")
        found["wrong_method"] = get("/api/v1/status", method="DELETE")
        found["repeated"] = get("/api/v1/status?limit=1&limit=2")
        found["openapi"] = sorted(get("/api/v1/openapi.json")[1]["paths"])
        """,
    )
    assert found["at_ready"] == [], found
    assert found["servers"] == 200
    assert found["metrics"] == 200
    assert found["missing"] == [404, {"error": "Not Found: GET /api/v1/no-such-thing"}]
    assert found["wrong_method"] == [405, {"error": "Method Not Allowed: DELETE /api/v1/status"}]
    assert found["repeated"] == [
        400,
        {"error": "query 'limit' is given more than once; give it once"},
    ]
    # The first routes are in the document beside the rest's.
    for path in ("/api/v1/status", "/api/v1/ready", "/api/v1/shutdown", "/api/v1/servers"):
        assert path in found["openapi"], found["openapi"]
