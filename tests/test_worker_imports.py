"""A worker loads what serving needs: neither Rich nor pydantic, nor the CLI that started it.

multiprocess's spawn starts a worker by running the parent's `__main__` again (as
`__mp_main__`) before it unpickles the entry point: when a user types `farm up`, that is the
`farm` console script (`from farm.cli import main`). So both the entry point and the
package the console script imports must stay light; the first test checks both in a fresh
interpreter, the second in a real worker of a real `farm up`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.farmproc import FarmProcess, free_port, free_port_range

FARM_SCRIPT = Path(sys.executable).with_name("farm")  # the console script pip wrote
HEAVY = ("rich", "pydantic", "pydantic_core", "click", "aiohttp", "yaml")
# Compiled parts of the heavy packages: what a worker's memory map shows when it loaded them.
HEAVY_LIBRARIES = ("pydantic_core", "aiohttp", "yaml", "multidict", "yarl")


def test_the_worker_entry_point_loads_neither_rich_nor_pydantic() -> None:
    code = (
        "import importlib, json, runpy, sys; "
        f"runpy.run_path({str(FARM_SCRIPT)!r}, run_name='__mp_main__'); "
        "from farm.ipc import spawn; "
        "importlib.import_module(spawn.WORKER_ENTRY.partition(':')[0]); "
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(done.stdout)
    assert {"farm.cli", "farm.worker.process", "farm.errors"} <= set(loaded)
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]


def test_the_worker_entry_point_loads_no_numpy() -> None:
    """numpy (a quarter of a worker's imports) moves live values: the ticker loads it after
    the worker says Ready, in a thread, and a value fault when it first needs it."""
    code = (
        "import importlib, json, sys; from farm.ipc import spawn; "
        "importlib.import_module(spawn.WORKER_ENTRY.partition(':')[0]); "
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(done.stdout)
    assert "farm.worker.process" in loaded
    assert not [m for m in loaded if m.split(".")[0] == "numpy"], loaded


def test_a_worker_of_farm_up_maps_no_library_of_the_cli() -> None:
    farm = FarmProcess(
        count=2,
        workers=1,
        port_base=free_port_range(2),
        api_port=free_port(),
        program=(str(FARM_SCRIPT),),
    ).start()
    try:
        farm.wait_ready()
        [worker] = farm.worker_pids()
        mapped = Path(f"/proc/{worker}/maps").read_text()
        assert "uvloop" in mapped  # the worker's own compiled loop: the map is read right
        assert not [lib for lib in HEAVY_LIBRARIES if f"/{lib}/" in mapped]
        assert farm.stop()[0] == 0
    finally:
        farm.kill()
