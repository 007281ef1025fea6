"""The farm-wide and per-worker series of /metrics: build info, servers desired and ready,
each worker's state, heartbeat, restarts, CPU and memory, and TLS sessions by role.

Part of the metrics exposition (farm.master.metrics.servers renders them first, then the
per-server series). Read from the supervisor's slots and the workers' heartbeats and
shared-memory counters; a few lines per worker, so plain formatting is fast enough.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

from farm.master.metrics.series import PREFIX, escape, header
from farm.master.supervision.slot import Slot, SlotState


def farm_series(out: list[str], desired: int, ready: int, build_labels: str) -> None:
    out.append(header(PREFIX + "build_info", "gauge", "The farm's version; always 1."))
    out.append(f"{PREFIX}build_info{{{build_labels}}} 1\n")
    out.append(header(PREFIX + "servers_desired", "gauge", "Servers the farm should run."))
    out.append(f"{PREFIX}servers_desired {desired}\n")
    out.append(header(PREFIX + "servers_ready", "gauge", "Servers answering Modbus requests."))
    out.append(f"{PREFIX}servers_ready {ready}\n")


def worker_series(out: list[str], slots: Sequence[Slot]) -> None:
    now = time.monotonic()
    families: dict[str, tuple[str, str, list[str]]] = {
        "worker_up": ("gauge", "1 if the worker is ready, else 0.", []),
        "worker_heartbeat_age_seconds": (
            "gauge",
            "Seconds since the worker's last heartbeat (grows while it is replaced).",
            [],
        ),
        "worker_restarts_total": ("counter", "Times the worker was replaced.", []),
        "worker_loop_lag_seconds": (
            "gauge",
            "How late the worker's event loop woke from its last heartbeat sleep.",
            [],
        ),
        "worker_cpu_seconds_total": (
            "counter",
            "CPU time of the worker, summed over its restarts.",
            [],
        ),
        "worker_resident_memory_bytes": ("gauge", "Resident memory of the worker.", []),
        "worker_servers": ("gauge", "Servers the worker hosts and has up.", []),
    }

    def add_sample(family: str, labels: str, value: float) -> None:
        families[family][2].append(f"{PREFIX}{family}{{{labels}}} {value}\n")

    for slot in slots:
        labels = f'worker="{slot.shard.worker}"'
        beat = slot.heartbeat
        up = slot.state in (SlotState.READY, SlotState.STARTING)
        add_sample("worker_up", labels, int(slot.state is SlotState.READY))
        if slot.last_heartbeat:
            add_sample("worker_heartbeat_age_seconds", labels, now - slot.last_heartbeat)
        add_sample("worker_restarts_total", labels, slot.restarts)
        if beat is not None:
            add_sample("worker_loop_lag_seconds", labels, beat.loop_lag_s)
            add_sample("worker_resident_memory_bytes", labels, beat.rss_bytes)
        with contextlib.suppress(ValueError):  # released: the farm is stopping
            add_sample("worker_cpu_seconds_total", labels, slot.counters.cpu_seconds())
        add_sample("worker_servers", labels, slot.servers_up if up else 0)
    for family, (kind, text, samples) in families.items():
        if samples:
            out.append(header(PREFIX + family, kind, text))
            out.extend(samples)


def role_series(out: list[str], slots: Sequence[Slot]) -> None:
    samples = []
    for slot in slots:
        with contextlib.suppress(ValueError):  # released: the farm is stopping
            for role, count in slot.counters.roles().items():
                samples.append(
                    f'{PREFIX}tls_sessions_total{{worker="{slot.shard.worker}",'
                    f'role="{escape(role)}"}} {count}\n'
                )
    if samples:
        out.append(
            header(
                PREFIX + "tls_sessions_total",
                "counter",
                "TLS sessions established, by the role in the client's certificate "
                "(none: no role; other: past the first 15 roles a worker saw).",
            )
        )
        out.extend(samples)
