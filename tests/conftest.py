"""Fixtures shared by the tests: a running farm, and a guard against leftover processes."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from collections.abc import Callable, Iterator

import pytest

from tests.farmproc import FarmProcess, descendants, free_port, free_port_range, wait_for


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Fail any test that leaves a child process behind (then clean it up, by PID).

    multiprocess's resource tracker is exempt: a test that runs a Supervisor in process
    starts it, and it lives, by design, as long as the pytest process.
    """
    before = descendants(os.getpid())
    yield

    def left_behind() -> set[int]:
        return {p for p in descendants(os.getpid()) - before if not _resource_tracker(p)}

    try:
        wait_for(lambda: not left_behind(), 10, "child processes to exit")
    except AssertionError:
        left = left_behind()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        pytest.fail(f"test left processes behind: {sorted(left)}")


def _resource_tracker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"resource_tracker" in cmdline.read()
    except OSError:
        return False


def make_farm(count: int, workers: int = 2, extra: list[str] | None = None) -> FarmProcess:
    """A farm on free ports, not started yet."""
    port_base = free_port_range(count)
    api_port = free_port()
    return FarmProcess(
        count=count,
        workers=workers,
        port_base=port_base,
        api_port=api_port,
        extra=extra or [],
    )


def start_farm(count: int, workers: int = 2, extra: list[str] | None = None) -> FarmProcess:
    return make_farm(count, workers, extra).start()


@pytest.fixture(scope="module")
def farm() -> Iterator[FarmProcess]:
    """A 20-server, 2-worker farm shared by a module's tests (they must not kill it)."""
    running = ready_farm(20)
    try:
        yield running
    finally:
        code, _, stderr = running.stop()
        assert code == 0, stderr


def ready_farm(count: int, workers: int = 2, extra: list[str] | None = None) -> FarmProcess:
    """`start_farm`, up and ready, started again on other ports if one was taken meanwhile."""
    for attempt in range(3):
        farm = start_farm(count, workers, extra)
        try:
            farm.wait_ready()
            return farm
        except AssertionError as error:
            farm.kill()
            if "already in use" not in str(error) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def ready_config_farm(
    config: Callable[[int], str],
    count: int,
    directory: str,
    extra: list[str] | None = None,
    ready: int | None = None,
) -> FarmProcess:
    """A farm from the config text `config(port_base)` on `count` free ports, up and ready
    (`ready` servers of them when not all: a shard's).

    Ports are free when probed but taken only when the farm binds them: on a machine shared
    with other test runs another program may take one in between. The farm then exits with
    "address already in use", and it is started again on other ports (three tries).
    """
    for attempt in range(3):
        port_base = free_port_range(count)
        api_port = free_port()
        path = os.path.join(directory, "farm.yaml")
        with open(path, "w") as file:
            file.write(config(port_base))
        farm = FarmProcess(
            count=count,
            workers=2,
            port_base=port_base,
            api_port=api_port,
            extra=extra or [],
            file=path,
            ready_count=ready,
        ).start()
        try:
            farm.wait_ready()
            return farm
        except AssertionError as error:
            farm.kill()
            if "already in use" not in str(error) or attempt == 2:
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def config_farm(
    config: Callable[[int], str], count: int, extra: list[str] | None = None
) -> Iterator[FarmProcess]:
    """`ready_config_farm` for a block (a module's farm): it must stop cleanly at the end."""
    with tempfile.TemporaryDirectory() as directory:
        running = ready_config_farm(config, count, directory, extra)
        try:
            yield running
        finally:
            code, _, stderr = running.stop()
            assert code == 0, stderr


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak-seconds",
        type=float,
        default=60.0,
        help="Length of tests/test_soak.py's run under load, the kill half-way (scripts/soak).",
    )
