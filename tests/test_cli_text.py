"""User text reaches the terminal as it is: square brackets are not Rich markup, nor is
`:fire:` an emoji code.

File names, fleet and server names, targets and addresses come from the user; printed
through Rich markup, `site[a].yaml` showed as `site.yaml` and `[/x]` ended in a traceback;
through Rich's emoji codes, `pump:fire:` showed as `pump` and a flame.
Each case runs the real `farm` command in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.farmproc import FarmProcess, free_port, free_port_range, run_together

pytestmark = pytest.mark.timeout(120)
WIDE = {**os.environ, "COLUMNS": "200"}  # rich wraps table cells at 80 columns in a pipe


def farm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farm", *args],
        capture_output=True, text=True, timeout=60, env=WIDE, cwd=cwd,
    )  # fmt: skip


def one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def config(fleet: str, template: str = "default", port: int = 7000) -> str:
    fleets = [{"name": fleet, "template": template, "count": 2, "addressing": {"port_start": port}}]
    return yaml.safe_dump({"fleets": fleets})


def test_validate_prints_file_and_fleet_names_literally(tmp_path: Path) -> None:
    (tmp_path / "site[a].yaml").write_text(config("meters[/x]"))
    shown = farm("validate", "site[a].yaml", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "site[a].yaml: valid" in shown.stdout
    assert "meters[/x]" in shown.stdout and "Traceback" not in shown.stderr
    planned = farm("plan", "site[a].yaml", "--servers", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert "meters[/x]-0000" in planned.stdout and "meters[/x]-0001" in planned.stdout


def test_emoji_codes_in_names_are_printed_as_they_are(tmp_path: Path) -> None:
    (tmp_path / "site:fire:.yaml").write_text(config("pump:fire:"))
    shown = farm("validate", "site:fire:.yaml", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "site:fire:.yaml: valid" in shown.stdout and "pump:fire:" in shown.stdout
    planned = farm("plan", "site:fire:.yaml", "--servers", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert "pump:fire:-0000" in planned.stdout and "\N{FIRE}" not in planned.stdout


def test_tables_in_a_pipe_keep_every_cell_whole(tmp_path: Path) -> None:
    """No COLUMNS, stdout a pipe: Rich would fit the table to 80 columns and cut cells."""
    (tmp_path / "farm.yaml").write_text(config("substation-feeder-meters", port=27000))
    narrow = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    for command in (["validate", "farm.yaml"], ["plan", "farm.yaml", "--servers"]):
        shown = subprocess.run(
            [sys.executable, "-m", "farm", *command],
            capture_output=True, text=True, timeout=60, env=narrow, cwd=tmp_path,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert "\N{HORIZONTAL ELLIPSIS}" not in shown.stdout, shown.stdout
        assert "substation-feeder-meters" in shown.stdout, shown.stdout
        assert "127.0.0.1:27000" in shown.stdout, shown.stdout  # the whole address


def test_error_lines_print_names_literally(tmp_path: Path) -> None:
    line = one_error_line(farm("validate", "nope[a].yaml", cwd=tmp_path), 2)
    assert line.startswith("farm: error: nope[a].yaml: ")
    odd = tmp_path / "odd["  # with the file below: a path that reads "odd[/x].yaml"
    odd.mkdir()
    (odd / "x].yaml").write_text(config("a", template="t[/x]"))
    line = one_error_line(farm("validate", "odd[/x].yaml", cwd=tmp_path), 2)
    assert line.startswith("farm: error: odd[/x].yaml: fleets[0].template: found 't[/x]'"), line
    line = one_error_line(farm("up", "odd[/x].yaml", cwd=tmp_path), 2)
    assert "odd[/x].yaml" in line and "'t[/x]'" in line


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["bench", "--target", "[red]h[/x]:x"], "--target '[red]h[/x]:x'"),
        (["bench", "--target", "127.0.0.1:1", "--mix", "3:[/x]"], "--mix '3:[/x]'"),
        (["status", "--api-host", "[/x]"], "http://[/x]:"),
        (["prometheus-config", "--farm", "127.0.0.1:[b]"], "http://127.0.0.1:[b]"),
    ],
    ids=["bench-target", "bench-mix", "status-api-host", "prometheus-farm"],
)
def test_options_are_echoed_literally(args: list[str], shown: str) -> None:
    line = one_error_line(farm(*args), 2)
    assert shown in line, line


def test_servers_and_faults_of_a_running_farm_are_printed_literally(tmp_path: Path) -> None:
    path = tmp_path / "site[a].yaml"
    path.write_text(config("meters[/x]", port=free_port_range(2)))
    running = FarmProcess(count=2, workers=1, port_base=0, api_port=free_port(), file=str(path))
    running.start()
    try:
        running.wait_ready()
        api = ["--api-port", str(running.api_port)]
        command = [sys.executable, "-m", "farm"]
        # Commands that do not depend on one another run side by side (run_together).
        listed, added = run_together(
            [
                [*command, "servers", *api],
                [*command, "fault", "add", "delay", "--target", "meters[/x]-0001", "--ms", "1",
                 *api],
            ],
            env=WIDE,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        assert "meters[/x]-0000" in listed.stdout and "meters[/x]-0001" in listed.stdout
        assert added.returncode == 0, added.stderr
        assert "on meters[/x]-0001" in added.stdout, added.stdout
        listed = farm("fault", "list", *api)
        assert listed.returncode == 0 and "meters[/x]-0001" in listed.stdout, listed.stderr
        story = tmp_path / "story[b]:fire:.yaml"
        story.write_text("scenario:\n  steps:\n    - {at: 60s, name: 'trip[/x]:fire:', "
                         "stop: {target: 'meters[/x]-0001'}}\n")  # fmt: skip
        cleared, played = run_together(
            [[*command, "fault", "clear", "--all", *api], [*command, "scenario", "run", story.name,
             *api]],
            env=WIDE,
            cwd=tmp_path,
        )  # fmt: skip
        assert cleared.returncode == 0 and "cleared 1 fault" in cleared.stdout, cleared.stderr
        assert played.returncode == 0, played.stderr
        assert "playing story[b]:fire:.yaml: 1 step\n" in played.stdout, played.stdout
        status = farm("scenario", "status", *api)
        assert status.returncode == 0 and "trip[/x]:fire:" in status.stdout, status.stderr
        stopped = farm("scenario", "stop", *api)
        assert stopped.returncode == 0, stopped.stderr
    finally:
        code, _, stderr = running.stop()
    assert code == 0, stderr
