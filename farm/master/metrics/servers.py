"""Prometheus metrics: the master renders /metrics from what the workers counted.

Sits between the workers and the API (... banks, stats -> metrics -> api). The page is the
master's own families first, from a prometheus_client registry (farm.master.metrics.registry:
build info, servers, workers, faults active, scenario step, the master's process), then the
per-server families, rendered here from the shards' shared-memory counters (farm.ipc.stats).
Both in the text format, or both in OpenMetrics (one `# EOF` at the very end) when the
scraper asks for it (`openmetrics(accept)`). Nothing here runs on a request's path.

The per-server families are rendered by hand rather than through the registry: a farm of
10,000 servers has a quarter of a million series, and building a metric family object per
scrape costs several times the budget (benchmarks/bench_scrape.py measures both). Label
strings are built once per shard (farm.master.metrics.series); a scrape copies each shard's
counters in one go and formats whole columns with C-level `map`/`starmap`, so no Python
bytecode runs per line.

Series with a code label (requests by function code, exceptions by exception code) appear
when their counter first moves; a server's duration histogram appears with its first
answered request. Every other per-server series is always there.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from importlib import metadata
from itertools import accumulate, compress, repeat, starmap
from operator import add, truediv
from typing import TYPE_CHECKING

from prometheus_client import exposition
from prometheus_client.openmetrics import exposition as openmetrics_exposition

from farm import __version__
from farm.config.faults.kinds import KINDS
from farm.ipc.stats import (
    BYTES_RECEIVED,
    BYTES_SENT,
    CLOSE_REASONS,
    CLOSED,
    CONNECTIONS_ACCEPTED,
    CONNECTIONS_OPEN,
    CRC_ERRORS,
    DURATION,
    DURATION_BOUNDS_S,
    DURATION_SUM_NS,
    EXCEPTION_CODES,
    EXCEPTIONS,
    FUNCTION_CODES,
    HEADER_SLOTS,
    INJECTIONS,
    MALFORMED_FRAMES,
    REQUESTS,
    SERVER_SLOTS,
    TLS_HANDSHAKE_FAILURES,
    UNANSWERED,
)
from farm.master.faults.table import FaultTable
from farm.master.metrics.registry import master_registry
from farm.master.metrics.series import PREFIX, ShardSeries, header, openmetrics_header
from farm.master.observe.tallies import ClientTallies
from farm.master.supervision.supervisor import Supervisor

if TYPE_CHECKING:
    from farm.master.scenario.player import ScenarioPlayer

CONTENT_TYPE = exposition.CONTENT_TYPE_PLAIN_0_0_4  # the text format
OPENMETRICS_CONTENT_TYPE = openmetrics_exposition.CONTENT_TYPE_LATEST  # OpenMetrics 1.0.0
_EOF = b"# EOF\n"
DURATION_NAME = PREFIX + "request_duration_seconds"

# (name, type, help, slot) for the per-server series with no label but server and worker.
_PLAIN = (
    ("connections_open", "gauge", "Client connections open now.", CONNECTIONS_OPEN),
    (
        "connections_accepted_total",
        "counter",
        "Client connections accepted.",
        CONNECTIONS_ACCEPTED,
    ),
    ("received_bytes_total", "counter", "Bytes received from clients.", BYTES_RECEIVED),
    ("sent_bytes_total", "counter", "Bytes sent to clients.", BYTES_SENT),
    (
        "malformed_frames_total",
        "counter",
        "Frames with a bad MBAP header (protocol id not 0, length out of range); "
        "each closes its TCP or TLS connection (a UDP datagram is dropped).",
        MALFORMED_FRAMES,
    ),
    (
        "crc_errors_total",
        "counter",
        "RTU frames (rtu-over-tcp) whose CRC did not match; ignored, as on a serial line.",
        CRC_ERRORS,
    ),
    (
        "unanswered_total",
        "counter",
        "Requests left unanswered by design: listen-only mode (FC 08/04), broadcasts and "
        "frames for another unit id on an RTU line.",
        UNANSWERED,
    ),
    (
        "tls_handshake_failures_total",
        "counter",
        "TLS clients refused in the handshake (no or a bad certificate, an old protocol).",
        TLS_HANDSHAKE_FAILURES,
    ),
)


Header = Callable[[str, str, str], str]  # a family's HELP and TYPE lines: name, type, help
Snapshots = list[tuple[list[str], list[int]]]  # (label strings, counters) of each shard


def openmetrics(accept: str) -> bool:
    """Whether a scraper's Accept header asks for OpenMetrics (prometheus_client decides,
    as its own HTTP handler does); else it gets the text format."""
    _, content_type = exposition.choose_encoder(accept)
    return content_type.startswith("application/openmetrics-text")


def _duration_format() -> str:
    """One server's whole histogram as one `str.format` template: {0} is its labels,
    {1}..{n} the cumulative buckets (the last is +Inf, and the count), {n+1} the sum."""
    les = [*map(repr, DURATION_BOUNDS_S), "+Inf"]  # 0.00025, 1.0: as Go prints them
    lines = [
        DURATION_NAME + '_bucket{{{0},le="' + le + '"}} {' + str(i + 1) + "}\n"
        for i, le in enumerate(les)
    ]
    lines.append(DURATION_NAME + "_sum{{{0}}} {" + str(len(les) + 1) + "}\n")
    lines.append(DURATION_NAME + "_count{{{0}}} {" + str(len(les)) + "}\n")
    return "".join(lines)


class FarmMetrics:
    """Renders `/metrics` for one supervisor; safe to call from a thread."""

    def __init__(
        self,
        supervisor: Supervisor,
        faults: FaultTable | None = None,
        scenario: ScenarioPlayer | None = None,
        clients: ClientTallies | None = None,
    ) -> None:
        self.supervisor = supervisor
        # Built once per shard, and again only when a slot's shard changes (servers added
        # or removed): keyed by worker, checked against the shard they were built for.
        self.series: dict[int, ShardSeries] = {}
        build = {
            "version": __version__,
            "python": platform.python_version(),
            "pymodbus": metadata.version("pymodbus"),
        }
        self.registry = master_registry(supervisor, build, faults, scenario, clients)
        self.duration_format = _duration_format()

    def render(self, openmetrics: bool = False) -> bytes:
        """The whole page: the text format, or OpenMetrics (its content type is
        OPENMETRICS_CONTENT_TYPE). One join and one encode of the whole page, as before
        the registry's part was added: at 10,000 servers each copy is 27 MB."""
        if not openmetrics:
            out = [exposition.generate_latest(self.registry).decode()]
            self._servers(out, header)
            return "".join(out).encode()
        own: bytes = openmetrics_exposition.generate_latest(self.registry)  # untyped module
        out = [own.removesuffix(_EOF).decode()]
        self._servers(out, openmetrics_header)
        out.append(_EOF.decode())
        return "".join(out).encode()

    def _servers(self, out: list[str], head: Header) -> None:
        """The per-server families, from the shards' counters as they are now."""
        snapshots = []
        info = []
        for slot in self.supervisor.slots:
            series = self.series.get(slot.shard.worker)
            if series is None or series.shard is not slot.shard:
                series = self.series[slot.shard.worker] = ShardSeries.of(slot.shard)
            info.extend(series.info)
            try:
                snapshots.append((series.labels, series.values(slot.counters)))
            except ValueError:  # the farm is stopping and has released the segment
                continue
        out.append(
            head(
                PREFIX + "server_info",
                "gauge",
                "Always 1: a server's fleet, template and transport (tcp, rtu-over-tcp, udp, tls).",
            )
        )
        out.extend(info)
        self._requests(out, snapshots, head)
        self._exceptions(out, snapshots, head)
        self._durations(out, snapshots, head)
        self._injections(out, snapshots, head)
        self._closed(out, snapshots, head)
        for name, kind, text, slot_index in _PLAIN:
            out.append(head(PREFIX + name, kind, text))
            template = PREFIX + name + "{%s} %d\n"
            for labels, values in snapshots:
                column = values[HEADER_SLOTS + slot_index :: SERVER_SLOTS]
                out.extend(map(template.__mod__, zip(labels, column, strict=True)))

    def _requests(self, out: list[str], snapshots: Snapshots, head: Header) -> None:
        out.append(
            head(
                PREFIX + "requests_total",
                "counter",
                "Modbus requests received, by function code ('other': any code the farm "
                "does not implement).",
            )
        )
        codes = [*map(str, FUNCTION_CODES), "other"]
        self._coded(out, snapshots, "requests_total", "function_code", codes, REQUESTS)

    def _exceptions(self, out: list[str], snapshots: Snapshots, head: Header) -> None:
        out.append(
            head(
                PREFIX + "exceptions_total",
                "counter",
                "Exception responses sent, by exception code (decimal; 11 = gateway target "
                "failed to respond).",
            )
        )
        codes = [*map(str, EXCEPTION_CODES), "other"]
        self._coded(out, snapshots, "exceptions_total", "exception_code", codes, EXCEPTIONS)

    def _closed(self, out: list[str], snapshots: Snapshots, head: Header) -> None:
        out.append(
            head(
                PREFIX + "connections_closed_total",
                "counter",
                "Client connections the farm closed or refused, by reason (max_connections, "
                "close_oldest, worker_limit, idle_timeout, frame_timeout, malformed_frame).",
            )
        )
        reasons = list(CLOSE_REASONS)
        self._coded(out, snapshots, "connections_closed_total", "reason", reasons, CLOSED)

    @staticmethod
    def _coded(
        out: list[str],
        snapshots: Snapshots,
        name: str,
        label: str,
        codes: list[str],
        first_slot: int,
    ) -> None:
        for offset, code in enumerate(codes):
            template = f'{PREFIX}{name}{{%s,{label}="{code}"}} %d\n'
            for labels, values in snapshots:
                column = values[HEADER_SLOTS + first_slot + offset :: SERVER_SLOTS]
                rows = compress(zip(labels, column, strict=True), column)
                out.extend(map(template.__mod__, rows))

    def _injections(self, out: list[str], snapshots: Snapshots, head: Header) -> None:
        out.append(
            head(
                PREFIX + "fault_injections_total",
                "counter",
                "Requests a fault acted on (offline and reboot: times the server went down).",
            )
        )
        self._coded(out, snapshots, "fault_injections_total", "kind", list(KINDS), INJECTIONS)

    def _durations(self, out: list[str], snapshots: Snapshots, head: Header) -> None:
        out.append(
            head(
                DURATION_NAME,
                "histogram",
                "Time from a request's arrival to its response being sent, in seconds.",
            )
        )
        buckets = len(DURATION_BOUNDS_S) + 1
        for labels, values in snapshots:
            columns = [values[HEADER_SLOTS + DURATION + i :: SERVER_SLOTS] for i in range(buckets)]
            cumulative = list(accumulate(columns, lambda a, b: list(map(add, a, b))))
            sums = values[HEADER_SLOTS + DURATION_SUM_NS :: SERVER_SLOTS]
            seconds = map(truediv, sums, repeat(1e9))
            rows = compress(zip(labels, *cumulative, seconds, strict=True), cumulative[-1])
            out.extend(starmap(self.duration_format.format, rows))
