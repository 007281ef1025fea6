"""The package's map (farm/__init__.py) holds: imports follow the arrows."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import grimp

import farm

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold() -> None:
    """import-linter checks every contract in pyproject.toml (config pure, master/worker apart)."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected groups of modules (two or more) of `graph` (Tarjan's)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in order:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], order[imported])
        if low[module] == order[module]:
            group = stack[stack.index(module) :]
            del stack[stack.index(module) :]
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in order:
            visit(module)
    return cycles


def test_no_import_cycle_at_run_time() -> None:
    """Modules import each other in one direction (imports inside functions count; a
    `TYPE_CHECKING` one does not run)."""
    graph = grimp.build_graph("farm", exclude_type_checking_imports=True, cache_dir=None)
    assert "farm.worker.process" in graph.modules
    assert not import_cycles(graph)
    # The finder finds: with the type-checking imports, process and switch import each other.
    assert ["farm.worker.membership", "farm.worker.process", "farm.worker.switch"] in (
        import_cycles(grimp.build_graph("farm", cache_dir=None))
    )


def test_master_and_cli_do_not_load_pymodbus() -> None:
    """The master runs in the CLI's process: neither may load pymodbus, even indirectly."""
    code = (
        "import sys, farm.cli, farm.master.run, farm.client; "
        "import json; print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('pymodbus', 'farm'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(done.stdout)
    assert "farm.master.supervision.supervisor" in loaded
    assert not [m for m in loaded if m.startswith(("pymodbus", "farm.worker"))], loaded


def test_farm_up_starts_its_workers_before_it_loads_the_api() -> None:
    """What `farm up --count N` loads before it starts its workers: neither the API's
    libraries (aiohttp, prometheus_client), pydantic, numpy nor yaml (it reads no file):
    farm.master.api loads the API's first part while the workers boot, farm.master.wiring
    the rest once they are up (tests/test_api_later.py); `farm status` loads no master."""
    code = (
        "import sys, json; import farm.cli.app; first = sorted(sys.modules); "
        "import farm.cli.up, farm.master.run; "
        "print(json.dumps([first, sorted(sys.modules)]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    command, up = json.loads(done.stdout)
    late = ("aiohttp", "prometheus_client", "pydantic", "numpy", "yaml", "farm.master.wiring")
    assert "farm.master.supervision.supervisor" in up
    assert not [m for m in up if m.startswith(late)], up
    assert not [m for m in command if m.startswith(("farm.master", "numpy", *late))], command


def test_farm_up_loads_no_api_client() -> None:
    """`farm up` declares the API's options but talks to no farm: it loads no module of the
    client's but those (farm.client.options, farm.client.defaults); the names of farm.client
    load their modules when first used (0.015 s of a start on the old code, which loaded
    api, answers, observed and selectors)."""
    code = (
        "import sys, json; import farm.cli.app, farm.cli.up; before = sorted(sys.modules); "
        "from farm.client import FarmClient, Fleet, api_options, DEFAULT_API_PORT; "
        "import farm.client; "
        "print(json.dumps([before, [FarmClient.__module__, Fleet.__module__, DEFAULT_API_PORT], "
        "[name for name in farm.client.__all__ if not hasattr(farm.client, name)]]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    before, found, missing = json.loads(done.stdout)
    loaded = [m for m in before if m.startswith("farm.client")]
    assert loaded == ["farm.client", "farm.client.defaults", "farm.client.options"], loaded
    assert found == ["farm.client.api", "farm.client.selectors", 9502], found
    assert missing == [], missing


def test_every_subpackage_says_its_part() -> None:
    for info in pkgutil.iter_modules(farm.__path__):
        if info.name == "__main__":
            continue  # running it runs the CLI
        module = importlib.import_module(f"farm.{info.name}")
        assert (module.__doc__ or "").strip(), f"farm.{info.name} has no docstring"
        shown = f"{info.name}/" if info.ispkg else f"{info.name}.py"
        assert shown in (farm.__doc__ or ""), f"farm/__init__ omits {shown}"


def test_every_module_is_named_in_its_package_map() -> None:
    """Each package's docstring names each of its modules and subpackages (no drifted maps)."""
    missing = []
    for info in pkgutil.walk_packages(farm.__path__, "farm."):
        if not info.ispkg:
            continue
        package = importlib.import_module(info.name)
        doc = package.__doc__ or ""
        for child in pkgutil.iter_modules(package.__path__):
            if not re.search(rf"\b{re.escape(child.name)}\b", doc):
                missing.append(f"{info.name}: {child.name}")
    assert not missing, f"package maps omit: {missing}"


def test_the_readme_draws_every_package() -> None:
    """The "How it works" tree (docs/internals.md, linked from README) has a line for each
    package of farm/ (no drifted map)."""
    section = (ROOT / "docs" / "internals.md").read_text()
    drawn = set(re.findall(r"[─ ]([a-z_]+)/ ", section))
    packages = {
        info.name.rsplit(".", 1)[-1]
        for info in pkgutil.walk_packages(farm.__path__, "farm.")
        if info.ispkg
    }
    assert packages and not packages - drawn, f"docs/internals.md's map omits {packages - drawn}"
