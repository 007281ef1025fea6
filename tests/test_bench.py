"""`farm bench` against a real farm: its counts add up, and agree with what the farm served.

No speed is asserted anywhere: only counts, which do not depend on how busy the machine is.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient

from farm.bench.latency import Histogram, bucket
from tests.farmproc import HOST, FarmProcess, free_port, wait_for

pytestmark = pytest.mark.timeout(120)


def bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "farm", "bench", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def bench_json(*args: str) -> dict[str, Any]:
    """The JSON report. `--timeout 10`, not the default 1 s: on a loaded machine an answer
    may come late without being lost, so `timeouts == 0` means no request went unanswered.
    The slowest answer is printed."""
    done = bench(*args, "--timeout", "10", "--json")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    print(f"{report['responses']} answered, slowest in {report['latency_s']['max'] * 1e3:.1f} ms")
    return report


def served(farm: FarmProcess) -> int:
    """Requests the farm's workers say they answered (reported with each heartbeat)."""
    return sum(int(w["requests"]) for w in farm.status()["workers"])


def assert_farm_served(farm: FarmProcess, before: int, expected: int) -> None:
    wait_for(lambda: served(farm) == before + expected, 10, f"the farm to count {expected}")


def assert_clean(report: dict[str, Any]) -> None:
    errors = ("timeouts", "connection_errors", "lost", "unexpected")
    assert {key: report[key] for key in errors} == dict.fromkeys(errors, 0)
    assert report["responses"] == report["sent"] > 0
    lat = report["latency_s"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]


def test_closed_loop_counts_match_what_the_farm_served(farm: FarmProcess) -> None:
    before = served(farm)
    report = bench_json("--api-port", str(farm.api_port), "-c", "8", "--duration", "1")
    assert_clean(report)
    assert report["mode"] == "closed" and report["targets"] == farm.count
    assert report["connected"] == 8 and report["exceptions_total"] == 0
    assert report["generator"]["processes"] == 1 and report["generator"]["cpu_s"] > 0
    assert_farm_served(farm, before, report["sent"])


def test_processes_pipelining_and_writes(farm: FarmProcess) -> None:
    """Two generator processes, 4 requests in flight per connection, a read/write mix."""
    before = served(farm)
    report = bench_json(
        "--target", f"{HOST}:{farm.port(0)}-{farm.port(3)}",
        "-c", "4", "-p", "2", "--depth", "4", "--duration", "1",
        "--mix", "3:3,16:1", "--address", "100", "--quantity", "5",
    )  # fmt: skip
    assert_clean(report)
    assert report["generator"]["processes"] == 2 and len(report["generator"]["busy"]) == 2
    assert report["targets"] == 4 and report["exceptions_total"] == 0
    assert_farm_served(farm, before, report["sent"])
    client = ModbusTcpClient(HOST, port=farm.port(2), timeout=3, retries=0)
    assert client.connect()
    try:  # FC 16 of the mix wrote 0, 1, 2, 3, 4 from address 100
        assert client.read_holding_registers(100, count=5).registers == [0, 1, 2, 3, 4]
    finally:
        client.close()
    assert_farm_served(
        farm, before, report["sent"] + 1
    )  # and that read: the next test starts clean


def test_exception_responses_are_counted_by_code(farm: FarmProcess) -> None:
    before = served(farm)
    report = bench_json(
        "--api-port", str(farm.api_port), "-c", "2", "--duration", "0.5",
        "--address", "995", "--quantity", "10",
    )  # fmt: skip
    assert_clean(report)
    assert report["exceptions"] == {"02": report["responses"]}
    assert report["exceptions_total"] == report["responses"]
    assert_farm_served(farm, before, report["sent"])


def test_open_loop_schedules_exactly_rate_times_duration(farm: FarmProcess) -> None:
    before = served(farm)
    report = bench_json(
        "--api-port", str(farm.api_port), "-c", "5", "--rate", "400", "--duration", "1",
        "--depth", "8",
    )  # fmt: skip
    assert report["mode"] == "open"
    assert report["sent"] + report["shed"] == 400
    assert report["responses"] == report["sent"]
    assert report["timeouts"] == report["connection_errors"] == report["unexpected"] == 0
    assert_farm_served(farm, before, report["sent"])


def test_max_requests_bounds_the_run(farm: FarmProcess) -> None:
    before = served(farm)
    report = bench_json(
        "--api-port", str(farm.api_port), "-c", "3", "--depth", "2",
        "--max-requests", "500", "--duration", "60",
    )  # fmt: skip
    assert_clean(report)
    assert report["sent"] == 500 and report["window_s"] < 30
    assert_farm_served(farm, before, 500)


def test_nothing_listening_is_one_line_and_exit_1() -> None:
    port = free_port()
    done = bench("--target", f"{HOST}:{port}", "-c", "2", "--duration", "0.5", "--json")
    assert done.returncode == 1
    assert "no connection to any of the 1 targets" in done.stderr
    assert "Traceback" not in done.stderr


def test_no_farm_is_one_line_and_exit_1() -> None:
    done = bench("--api-port", str(free_port()), "--duration", "0.5")
    assert done.returncode == 1 and "no farm answers" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mix", "99:1"], "function code 99"),
        (["--mix", "16:1", "--quantity", "124"], "too large"),
        (["--target", "localhost"], "expected HOST:PORT"),
        (["--depth", "0"], "--depth"),
        (["-c", "2", "-p", "3"], "--processes"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = bench("--target", f"{HOST}:1", *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_human_report_names_every_figure(farm: FarmProcess) -> None:
    done = bench("--api-port", str(farm.api_port), "-c", "2", "--duration", "0.3")
    assert done.returncode == 0, done.stderr
    for word in ("throughput", "latency", "p99", "exceptions", "timeouts", "generator"):
        assert word in done.stdout


def test_histogram_percentiles_are_within_a_tenth_of_a_percent() -> None:
    rng = random.Random(5)
    samples = sorted(int(rng.lognormvariate(7, 1.5)) for _ in range(20_000))
    dense = [0] * 40960
    for us in samples:
        dense[bucket(us)] += 1
    histogram = Histogram.from_dense(dense, max(samples))
    for q in (0.5, 0.9, 0.99, 0.999):
        exact = samples[round(q * len(samples)) - 1]
        assert histogram.percentile(q) * 1e6 == pytest.approx(exact, rel=1e-3, abs=1)
    merged = Histogram.merged([histogram, histogram])
    assert merged.total == 2 * len(samples) and merged.max_us == max(samples)
