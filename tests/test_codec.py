"""Typed points: known byte/word-order vectors, and round trips through pymodbus's decoder."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client import ModbusTcpClient

from farm.config import codec
from farm.config.templates import Point, PointType, Table

pytestmark = pytest.mark.timeout(60)
DT = ModbusTcpClient.DATATYPE


def point(
    kind: PointType, byte_order: str = "big", word_order: str = "big", **more: float
) -> Point:
    return Point(
        name="p",
        unit_id=1,
        table=Table.HOLDING_REGISTERS,
        address=0,
        type=kind,
        byte_order=byte_order,
        word_order=word_order,
        **more,  # type: ignore[arg-type]
    )


def registers(data: bytes) -> list[int]:
    return list(struct.unpack(f">{len(data) // 2}H", data))


@pytest.mark.parametrize(
    ("byte_order", "word_order", "expected"),
    [
        ("big", "big", [0x42F6, 0xE979]),  # ABCD, the Modbus convention
        ("big", "little", [0xE979, 0x42F6]),  # CDAB, "word swapped"
        ("little", "big", [0xF642, 0x79E9]),  # BADC, "byte swapped"
        ("little", "little", [0x79E9, 0xF642]),  # DCBA
    ],
)
def test_float32_orders_match_known_vectors(
    byte_order: str, word_order: str, expected: list[int]
) -> None:
    data = codec.encode_one(point(PointType.FLOAT32, byte_order, word_order), 123.456)
    assert registers(data) == expected


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        (PointType.INT16, -1, [0xFFFF]),
        (PointType.INT16, -40000, [0x8000]),  # saturates at the type's range
        (PointType.UINT16, 70000, [0xFFFF]),
        (PointType.UINT16, -5, [0x0000]),
        (PointType.INT32, -2, [0xFFFF, 0xFFFE]),
        (PointType.UINT32, 0x12345678, [0x1234, 0x5678]),
        (PointType.INT64, -1, [0xFFFF] * 4),
        (PointType.UINT64, 2**40 + 3, [0x0000, 0x0100, 0x0000, 0x0003]),
        (PointType.FLOAT64, 1.0, [0x3FF0, 0, 0, 0]),
        (PointType.BOOL, 1, [0x0001]),
    ],
)
def test_integer_and_float_vectors(kind: PointType, value: float, expected: list[int]) -> None:
    assert registers(codec.encode_one(point(kind), value)) == expected


def test_scale_stores_engineering_value_over_scale() -> None:
    scaled = point(PointType.UINT16, scale=0.1)
    assert registers(codec.encode_one(scaled, 230.5)) == [2305]
    decoded = codec.decode(scaled, np.frombuffer(bytes([0x09, 0x01]), dtype=np.uint8).reshape(1, 2))
    assert decoded[0] == pytest.approx(230.5)


def test_string_is_two_characters_per_register() -> None:
    text = Point(
        name="s", unit_id=1, table=Table.HOLDING_REGISTERS, address=0,
        type=PointType.STRING, length=3,
    )  # fmt: skip
    data = codec.encode_text(text, "SunS")
    assert registers(data) == [0x5375, 0x6E53, 0x0000]
    decoded = ModbusTcpClient.convert_from_registers(registers(data), DT.STRING)
    assert isinstance(decoded, str) and decoded.rstrip("\0") == "SunS"


_PYMODBUS = {
    PointType.INT16: (DT.INT16, st.integers(-(2**15), 2**15 - 1)),
    PointType.UINT16: (DT.UINT16, st.integers(0, 2**16 - 1)),
    PointType.INT32: (DT.INT32, st.integers(-(2**31), 2**31 - 1)),
    PointType.UINT32: (DT.UINT32, st.integers(0, 2**32 - 1)),
    PointType.INT64: (DT.INT64, st.integers(-(2**53), 2**53)),
    PointType.UINT64: (DT.UINT64, st.integers(0, 2**53)),
    PointType.FLOAT32: (DT.FLOAT32, st.floats(width=32, allow_nan=False, allow_infinity=False)),
    PointType.FLOAT64: (DT.FLOAT64, st.floats(-1e300, 1e300)),
}


@pytest.mark.parametrize("kind", list(_PYMODBUS), ids=str)
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_round_trip_through_pymodbus(kind: PointType, word_order: str) -> None:
    datatype, values = _PYMODBUS[kind]

    @given(values)
    def check(value: float) -> None:
        data = codec.encode_one(point(kind, word_order=word_order), value)
        decoded = ModbusTcpClient.convert_from_registers(
            registers(data),
            datatype,
            word_order=word_order,  # type: ignore[arg-type]
        )
        assert decoded == pytest.approx(value, rel=1e-7)
        ours = codec.decode(
            point(kind, word_order=word_order),
            np.frombuffer(data, dtype=np.uint8).reshape(1, -1),
        )
        assert ours[0] == pytest.approx(value, rel=1e-7)

    check()


@given(
    st.floats(-1e6, 1e6, width=32),
    st.sampled_from(["big", "little"]),
    st.sampled_from(["big", "little"]),
)
def test_decode_inverts_encode_in_every_order(
    value: float, byte_order: str, word_order: str
) -> None:
    typed = point(PointType.FLOAT32, byte_order, word_order)
    data = codec.encode(typed, np.array([value, -value]))
    assert codec.decode(typed, data).tolist() == pytest.approx([value, -value])


INTEGERS = {
    PointType.INT16: (-(2**15), 2**15 - 1),
    PointType.UINT16: (0, 2**16 - 1),
    PointType.INT32: (-(2**31), 2**31 - 1),
    PointType.UINT32: (0, 2**32 - 1),
}


@given(
    kind=st.sampled_from(list(INTEGERS)),
    orders=st.sampled_from(
        [("big", "big"), ("little", "big"), ("big", "little"), ("little", "little")]
    ),
    fraction=st.floats(0, 1),
    scale=st.sampled_from([1.0, 0.1, 0.01, 10.0]),
)
def test_exact_encoding_round_trips_whatever_fits(
    kind: PointType, orders: tuple[str, str], fraction: float, scale: float
) -> None:
    """What the API writes (encode_exact) the API reads back (decode_one), to the resolution."""
    low, high = INTEGERS[kind]
    typed = point(kind, byte_order=orders[0], word_order=orders[1], scale=scale)
    raw = round(low + fraction * (high - low))
    value = raw * scale
    assert codec.decode_one(typed, codec.encode_exact(typed, value)) == pytest.approx(value)
    for outside in (low - 1, high + 1):  # one step past the type refuses, never clamps
        with pytest.raises(ValueError, match="holds"):
            codec.encode_exact(typed, outside * scale)


@pytest.mark.parametrize(
    ("kind", "value", "why"),
    [
        (PointType.FLOAT32, 1e39, "too large"),
        (PointType.FLOAT64, float("nan"), "finite"),
        (PointType.UINT16, "12", "number"),
        (PointType.BOOL, 2, "0, 1"),
        (PointType.STRING, 5, "text"),
    ],
)
def test_exact_encoding_refuses_what_does_not_fit(
    kind: PointType, value: float | str, why: str
) -> None:
    typed = point(kind, length=2) if kind is PointType.STRING else point(kind)
    with pytest.raises(ValueError, match=why):
        codec.encode_exact(typed, value)


def test_exact_encoding_of_text_and_floats() -> None:
    text = point(PointType.STRING, byte_order="little", length=2)
    assert codec.decode_one(text, codec.encode_exact(text, "abc")) == "abc"
    with pytest.raises(ValueError, match="at most 4 bytes"):
        codec.encode_exact(text, "abcde")
    swapped = point(PointType.FLOAT32, word_order="little")
    assert (
        codec.encode_exact(swapped, 231.25)
        == struct.pack(">f", 231.25)[2:] + struct.pack(">f", 231.25)[:2]
    )


def test_an_operators_text_reads_as_one_number_wherever_it_is_written() -> None:
    """The API, scenario steps, `farm validate` and `farm set` read values through codec."""
    number = point(PointType.FLOAT32)
    assert codec.operator_value(number, " 230.5 ") == 230.5
    assert codec.operator_value(number, "TRUE") == 1.0
    assert codec.operator_value(number, True) == 1.0
    assert codec.operator_value(number, None) == 0.0
    assert codec.operator_value(number, 7) == 7
    assert codec.operator_value(point(PointType.STRING, length=4), "true") == "true"
    with pytest.raises(ValueError, match="takes a number, not 'volts'"):
        codec.operator_value(number, "volts")
    assert [codec.whole_from_text(word) for word in ("1234", "0x10", " true", "FALSE")] == [
        1234,
        16,
        1,
        0,
    ]
    with pytest.raises(ValueError):
        codec.whole_from_text("1.5")
