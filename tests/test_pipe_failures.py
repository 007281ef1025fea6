"""A garbled pipe is a worker failure said with its reason, on either end: never a quiet
exit 0, never told apart by an error's text.

A real Supervisor in this process, real spawned workers (tests/stub_workers.py for one
that garbles its end).
"""

from __future__ import annotations

import asyncio

import pytest

from farm.ipc.messages import LENGTH, VERSION
from farm.ipc.spawn import EXIT_PIPE_ERROR
from farm.master.http.app import status
from farm.master.supervision.supervisor import Supervisor, SupervisorOptions
from tests.test_supervisor_health import run_supervised, small_plan, until

pytestmark = pytest.mark.timeout(120)


def test_a_worker_that_garbles_its_pipe_is_replaced_and_status_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    options = SupervisorOptions(heartbeat_interval_s=0.2, backoff_s=(0.5,))

    async def test(supervisor: Supervisor) -> None:
        await asyncio.wait_for(supervisor.start(), 60)
        (slot,) = supervisor.slots
        await until(lambda: slot.restarts >= 1, 30, "the worker to be replaced")
        row = status(supervisor)["workers"][0]
        assert row["last_failure"] == (
            f"pipe protocol error (VersionMismatch): pipe frame version 99, expected {VERSION}"
        ), row

    run_supervised(small_plan(2, workers=1), options, test, "tests.stub_workers:garble_after_ready")
    assert "pipe protocol error (VersionMismatch)" in caplog.text


def test_a_worker_sent_a_garbled_frame_exits_with_the_pipe_error_code(
    capfd: pytest.CaptureFixture[str],
) -> None:
    options = SupervisorOptions(heartbeat_interval_s=0.2, backoff_s=(5.0,))

    async def test(supervisor: Supervisor) -> None:
        await asyncio.wait_for(supervisor.start(), 60)
        (slot,) = supervisor.slots
        assert slot.channel is not None
        slot.channel.sock.send(LENGTH.pack(2) + bytes([99, 0]))  # a master of another release
        await until(lambda: slot.restarts >= 1, 30, "the worker to exit")
        row = status(supervisor)["workers"][0]
        assert row["last_failure"].startswith(f"died (exit code {EXIT_PIPE_ERROR}"), row

    run_supervised(small_plan(2, workers=1), options, test)
    said = capfd.readouterr().err
    assert "the master's pipe is garbled (VersionMismatch): pipe frame version 99" in said
