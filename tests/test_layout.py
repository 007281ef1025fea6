"""The package's map (farm/__init__.py) holds: imports follow the arrows."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

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
