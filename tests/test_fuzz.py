"""Fuzzing, bounded: the engine against itself under every way of cutting a stream
(hypothesis), and a real farm over raw sockets against its shadow (tests/fuzzer.py). The long
run is `scripts/fuzz --seed S --duration D`."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzzer import BYSTANDER, TEMPLATE, Fuzzer, Shadow, fuzz_farm
from tests.rawmodbus import Bystander, read_registers

pytestmark = pytest.mark.timeout(180)

frames = st.builds(
    lambda transaction, protocol, lie, unit, pdu: (
        struct.pack(">HHHB", transaction, protocol, max(0, len(pdu) + 1 + lie), unit) + pdu
    ),
    st.integers(0, 0xFFFF),
    st.sampled_from([0, 0, 0, 0, 0, 0, 1]),
    st.sampled_from([0, 0, 0, 0, 0, -1, -3, 2, 300]),
    st.sampled_from([0, 1, 7, 0xFF, 42]),
    st.one_of(
        st.binary(min_size=1, max_size=253),
        st.tuples(
            st.sampled_from([1, 2, 3, 4, 5, 6, 15, 16]), st.binary(min_size=4, max_size=12)
        ).map(lambda fc_rest: bytes([fc_rest[0]]) + fc_rest[1]),
    ),
)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.yaml"
    path.write_text(TEMPLATE.replace("PORT", "20000"))
    return path


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stream=st.lists(frames, min_size=1, max_size=12).map(b"".join), data=st.data())
def test_any_cut_of_a_stream_gets_the_same_answers(
    config: Path, stream: bytes, data: st.DataObject
) -> None:
    """However a stream is cut into reads, the answers (and the hang-up) are those of the
    stream read whole, and the banks end up the same."""
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=10)))
    whole, pieces = Shadow("fuzz-0000", config), Shadow("fuzz-0000", config)
    expected = whole.answer(stream)
    got = pieces.answer_in_pieces(
        [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    )
    assert got == expected
    assert whole.memory == pieces.memory


def test_raw_socket_fuzz_changes_nothing_for_anyone_else(tmp_path: Path) -> None:
    """Every function code 0-255 with a random body, every unit id, lying length fields,
    split and coalesced streams: each answer byte for byte the shadow's, each hang-up
    where it must be; meanwhile a server on the same worker answers every read, and
    afterwards every server answers and no worker restarted."""
    farm, config = fuzz_farm(tmp_path)
    farm.start()
    try:
        farm.wait_ready()
        bystander = Bystander(farm.port(BYSTANDER))
        bystander.start()
        report = Fuzzer(farm, config, seed=20_261_130).run(cases=1_000, seconds=40)
        bystander.done.set()
        bystander.join(10)
        for index in range(3):
            assert read_registers(farm.port(index), 5, 2) == [0, 4711]  # the read-only point
        restarts = [worker["restarts"] for worker in farm.status()["workers"]]
    finally:
        code, _, stderr = farm.stop()
    print(
        f"fuzz: {report.cases} cases, {report.sent} bytes sent, {report.answers} bytes of "
        f"answers checked, {report.hangups} hang-ups; bystander {len(bystander.latencies)} reads"
    )
    assert code == 0, stderr
    assert report.failures == []
    assert report.cases >= 512 + 100  # the exhaustive part and some lies
    assert restarts == [0, 0]
    assert not bystander.failures and bystander.latencies
