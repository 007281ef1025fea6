"""Hostile files given to the CLI: FIFOs, devices, endless or deep files, files outside the
config's directory, costly counts and patterns, bad certificates. Each one is refused in one
line with exit 2, quickly, never a hang, a traceback or a file's content (issue 19)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from farm.cli.budget import MAX_SERVERS, check_fleet_size
from farm.cli.validate import make_plan
from farm.config.templates import default_template
from farm.errors import ConfigError
from tests.farmproc import run_together

pytestmark = pytest.mark.timeout(120)

SECRET = "s3cret-line-of-a-private-file"


def farm(*args: str, timeout: float = 30) -> tuple[int, str, str, float]:
    """`farm ARGS` in a subprocess: (exit code, stdout, stderr, seconds)."""
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "farm", *args], capture_output=True, text=True, timeout=timeout
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - began


def refused(*args: str, timeout: float = 30) -> str:
    """The one line of a refusal (exit 2, no traceback)."""
    code, _, stderr, _ = farm(*args, timeout=timeout)
    return refusal_line(code, stderr)


def all_refused(*commands: list[str], timeout: float = 30) -> list[str]:
    """`refused` of commands that do not depend on one another, run at once (run_together)."""
    done = run_together(
        [[sys.executable, "-m", "farm", *args] for args in commands], timeout=timeout
    )
    return [refusal_line(each.returncode, each.stderr) for each in done]


def refusal_line(code: int, stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-2000:]
    assert code == 2, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-2000:]
    return lines[0]


def config(**fleet: Any) -> dict[str, Any]:
    return {
        "templates": {
            "meter": {
                "units": [{"unit_id": 1, "holding_registers": 10}],
                "points": [{"name": "p", "table": "holding_registers", "address": 0}],
            }
        },
        "fleets": [
            {
                "name": "a",
                "template": "meter",
                "count": 2,
                "addressing": {"port_start": 6100, "port_end": 6199},
                **fleet,
            }
        ],
    }


def replay(csv: str, column: str | int = 0) -> dict[str, Any]:
    data = config()
    data["templates"]["meter"]["points"][0]["behaviour"] = {
        "kind": "replay",
        "csv": csv,
        "column": column,
    }
    return data


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# -- files that never end or never open ----------------------------------------------------


def test_a_fifo_or_a_device_as_the_config_file_is_refused_by_name(tmp_path: Path) -> None:
    fifo = tmp_path / "farm.yaml"
    os.mkfifo(fifo)
    fifo_line, device_line = all_refused(
        ["validate", str(fifo)], ["validate", "/dev/zero"], timeout=20
    )
    assert "is a FIFO, not a regular file" in fifo_line
    assert "is a character device" in device_line


def test_a_config_file_past_its_limit_is_refused_after_a_bounded_read(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:
        handle.truncate(16 * 1024 * 1024 + 1)
    line = refused("validate", str(big))
    assert "larger than 16,777,216 bytes, the limit for a config file" in line


@pytest.mark.parametrize(
    ("name", "text"),
    [("deep.yaml", "[" * 3000 + "]" * 3000), ("deep.toml", "a = " + "[" * 3000 + "]" * 3000)],
)
def test_a_config_nested_thousands_deep_is_one_line(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert "nested more than 64 levels deep" in refused("validate", str(path))


def test_a_config_that_is_not_utf8_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"fleets:\n  - name: caf\xe9\n")
    assert refused("validate", str(path)).endswith(f"{path}: line 2, column 14: not UTF-8 text")


def test_a_fifo_or_device_as_the_state_file_is_refused_before_anything_binds(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "state.bin"
    os.mkfifo(fifo)
    states = (str(fifo), "/dev/zero")
    lines = all_refused(
        *[["up", "--count", "1", "--port-base", "6300", "--state", state] for state in states]
    )
    for state, line in zip(states, lines, strict=True):
        assert "not a regular file" in line and state in line


# -- replay CSVs ----------------------------------------------------------------------------


def test_a_replay_csv_outside_the_config_directory_is_refused(tmp_path: Path) -> None:
    here = tmp_path / "config"
    here.mkdir()
    outside = tmp_path / "private.csv"
    outside.write_text(f"{SECRET}\n{SECRET}\n")
    # A symlink inside the directory that leads out is the same thing.
    (here / "link.csv").symlink_to(outside)
    names = ("/etc/shadow", "../private.csv", "link.csv")
    paths = [write(here / f"farm{number}.yaml", replay(name)) for number, name in enumerate(names)]
    lines = all_refused(*[["validate", str(path)] for path in paths])
    for name, line in zip(names, lines, strict=True):
        assert "outside" in line and SECRET not in line, (name, line)
        assert "--allow-outside" in line or name == "link.csv", (name, line)


def test_allowed_outside_a_csv_is_read_and_its_content_never_echoed(tmp_path: Path) -> None:
    here = tmp_path / "config"
    here.mkdir()
    outside = tmp_path / "private.csv"
    outside.write_text(f"v\n1\n{SECRET}\n")
    path = write(here / "farm.yaml", replay("../private.csv"))
    line = refused("validate", str(path), "--allow-outside", str(outside))
    assert "line 3: column 0 is not a number" in line and SECRET not in line
    line = refused("validate", str(write(path, replay("../private.csv", "x"))), "--allow-outside",
                   str(tmp_path))  # fmt: skip
    assert "line 1 (the header) has no column 'x'" in line and SECRET not in line
    outside.write_text("v\n1\n2\n")
    path = write(path, replay("../private.csv"))
    code, _, stderr, _ = farm("validate", str(path), "--allow-outside", str(outside))
    assert code == 0, stderr


def test_a_replay_csv_that_is_a_fifo_device_or_not_utf8_is_one_line(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.csv")
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    (tmp_path / "latin1.csv").write_bytes(b"v\n1\n\xff\n")
    path = tmp_path / "farm.yaml"
    assert "is a FIFO" in refused("validate", str(write(path, replay("fifo.csv"))), timeout=20)
    line = refused("validate", str(write(path, replay("zero.csv"))), "--allow-outside", "/dev")
    assert "is a character device" in line
    line = refused("validate", str(write(path, replay("latin1.csv"))))
    assert "line 3, column 1: not UTF-8 text" in line


# -- counts and patterns that cost without bound -------------------------------------------


def test_ten_million_servers_are_refused_in_under_a_second_with_the_numbers(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path / "farm.yaml",
        config(count=10_000_000, addressing={"ip_start": "10.0.0.1", "port": 502}),
    )
    began = time.monotonic()
    with pytest.raises(ConfigError) as refusal:
        make_plan(str(path), None, None, None, 1)
    assert time.monotonic() - began < 1.0
    assert f"10,000,000 servers (a: 10,000,000), more than the {MAX_SERVERS:,}" in str(
        refusal.value
    )
    line = refused("validate", str(path))
    assert "10,000,000 servers" in line


def test_a_fleet_past_the_machine_memory_is_refused_with_the_numbers() -> None:
    template = default_template()
    with pytest.raises(ConfigError) as refusal:
        check_fleet_size([("a", 500_000, template)], memory=4 * 1024**3)
    assert "500,000 servers need about 1" in str(refusal.value)
    assert "this machine has 4.0 GiB" in str(refusal.value)
    check_fleet_size([("a", 500_000, template)], shards=10, memory=4 * 1024**3)  # one shard fits


BAD_PATTERNS = (
    "{i:999999999}", "{i.__class__.__mro__}", "{fleet[0]}", "{i!r}", "{x}", "{i:{n}}", "{i:>40}"
)  # fmt: skip


def test_name_pattern_takes_only_plain_fields(tmp_path: Path) -> None:
    """Each pattern its own `farm validate`, run a few at once; each answers within 20 s."""
    paths = [
        write(tmp_path / f"farm{number}.yaml", config(name_pattern=pattern))
        for number, pattern in enumerate(BAD_PATTERNS)
    ]
    commands = [[sys.executable, "-m", "farm", "validate", str(path)] for path in paths]
    for pattern, done in zip(BAD_PATTERNS, run_together(commands, timeout=20), strict=True):
        assert done.returncode == 2 and "Traceback" not in done.stderr, (pattern, done.stderr)
        assert "name_pattern" in done.stderr, (pattern, done.stderr)


def test_a_wide_but_bounded_name_pattern_still_works(tmp_path: Path) -> None:
    path = write(tmp_path / "farm.yaml", config(name_pattern="{fleet}-{n:06d}-{i}"))
    plan = make_plan(str(path), None, None, None, 1)
    assert [spec.name for spec in plan.servers()] == ["a-000001-0", "a-000002-1"]


# -- certificates ---------------------------------------------------------------------------


def tls_config(tmp_path: Path, certificate: str, key: str, name: str = "farm.yaml") -> Path:
    return write(
        tmp_path / name,
        config(transport="tls", tls={"certificate": certificate, "key": key}),
    )


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("certs")
    made = run_together([[sys.executable, "-m", "farm", "certs", str(root / name)]
                         for name in ("one", "two")])  # fmt: skip
    for done in made:
        assert done.returncode == 0, done.stderr
    return root


def test_a_key_that_does_not_match_its_certificate_fails_validate(
    tmp_path: Path, two_sets: Path
) -> None:
    path = tls_config(tmp_path, str(two_sets / "one/server.pem"), str(two_sets / "two/server.key"))
    line = refused("validate", str(path))
    assert f"{two_sets / 'two/server.key'}: this key does not match the certificate" in line
    code, _, stderr, _ = farm("up", str(path), timeout=30)  # refused before anything starts
    assert code == 2 and "does not match" in stderr and "Traceback" not in stderr


def test_a_certificate_that_is_no_certificate_or_a_fifo_fails_validate(
    tmp_path: Path, two_sets: Path
) -> None:
    key = str(two_sets / "one/server.key")
    os.mkfifo(tmp_path / "cert.pem")
    tls_up = ["up", "--count", "1", "--transport", "tls", "--certs", str(tmp_path)]
    not_pem, fifo, no_certs = all_refused(
        ["validate", str(tls_config(tmp_path, key, key))],
        ["validate", str(tls_config(tmp_path, "cert.pem", key, "fifo.yaml"))],
        [*tls_up, "--port-base", "6400"],
        timeout=20,
    )
    assert f"{key}: not a PEM certificate" in not_pem
    assert "cert.pem: is a FIFO" in fifo
    assert "--certs" in no_certs


def test_certs_force_makes_every_key_owner_only(tmp_path: Path) -> None:
    code, _, stderr, _ = farm("certs", str(tmp_path))
    assert code == 0, stderr
    keys = sorted(tmp_path.glob("*.key"))
    assert keys
    for key in keys:
        key.chmod(0o644)
    code, _, stderr, _ = farm("certs", str(tmp_path), "--force")
    assert code == 0, stderr
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
