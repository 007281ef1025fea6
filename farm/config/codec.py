"""Typed values <-> register bytes, for many servers at once (numpy).

Beside the behaviours in the data flow (... worker -> behaviours -> codec -> banks). Banks
hold registers big-endian, as on the wire; a point's bytes are the value as the type's
big-endian bytes, with registers swapped for word_order "little" and the two bytes of each
register swapped for byte_order "little". Integer types round and saturate at the type's
range, as a device's firmware would clamp a reading.
"""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from farm.config.templates import Point, PointType

Floats = npt.NDArray[np.float64]
Bytes2D = npt.NDArray[np.uint8]

_DTYPES = {
    PointType.BOOL: ">u2",
    PointType.INT16: ">i2",
    PointType.UINT16: ">u2",
    PointType.INT32: ">i4",
    PointType.UINT32: ">u4",
    PointType.INT64: ">i8",
    PointType.UINT64: ">u8",
    PointType.FLOAT32: ">f4",
    PointType.FLOAT64: ">f8",
}


def byte_width(point: Point) -> int:
    return 1 if point.table.is_bits else 2 * point.width


def _limits(dtype: np.dtype[np.generic]) -> tuple[float, float]:
    info = np.iinfo(dtype)  # type: ignore[type-var]
    high = float(info.max)
    if dtype.itemsize == 8:
        # float64 rounds 2**63 - 1 and 2**64 - 1 up, past the type; stay just inside.
        high = float(np.nextafter(high, 0))
    return float(info.min), high


def _order(point: Point, raw: Bytes2D) -> Bytes2D:
    """Reorder big-endian value bytes (n, 2 * registers) into the point's byte/word order."""
    if point.word_order == "big" and point.byte_order == "big":
        return raw
    shaped = raw.reshape(raw.shape[0], -1, 2)
    if point.word_order == "little":
        shaped = shaped[:, ::-1, :]
    if point.byte_order == "little":
        shaped = shaped[:, :, ::-1]
    return np.ascontiguousarray(shaped).reshape(raw.shape[0], -1)


def encode(point: Point, values: Floats) -> Bytes2D:
    """Engineering values (one per server) -> the bytes each server's bank holds."""
    count = len(values)
    if point.table.is_bits:
        return (values >= 0.5).astype(np.uint8).reshape(count, 1)
    if point.type is PointType.STRING:
        raise ValueError("string points are encoded with encode_text")
    dtype = np.dtype(_DTYPES[point.type])
    raw = values / point.scale
    if point.type is PointType.BOOL:
        raw = (raw >= 0.5).astype(np.float64)
    if dtype.kind in "iu":
        low, high = _limits(dtype)
        raw = np.clip(np.rint(np.nan_to_num(raw)), low, high)
    data = raw.astype(dtype).view(np.uint8).reshape(count, dtype.itemsize)
    return _order(point, data)


def decode(point: Point, data: Bytes2D) -> Floats:
    """The bytes in the banks -> engineering values (the inverse of `encode`)."""
    if point.table.is_bits:
        return data[:, 0].astype(np.float64)
    dtype = np.dtype(_DTYPES[point.type])
    big = _order(point, np.ascontiguousarray(data))  # the reordering is its own inverse
    raw = big.view(dtype).reshape(len(data)).astype(np.float64)
    return raw * point.scale


def encode_text(point: Point, text: str) -> bytes:
    """A string point: two characters per register, first in the high byte, NUL-padded."""
    size = 2 * point.width
    data = text.encode("utf-8")[:size].ljust(size, b"\0")
    if point.byte_order == "little":
        data = b"".join(data[i : i + 2][::-1] for i in range(0, size, 2))
    return data


def encode_one(point: Point, value: float) -> bytes:
    return bytes(encode(point, np.array([value], dtype=np.float64))[0])


def decode_one(point: Point, data: bytes) -> float | str:
    """A point's bytes -> its engineering value (text for string points)."""
    if point.type is PointType.STRING and not point.table.is_bits:
        if point.byte_order == "little":
            data = b"".join(data[i : i + 2][::-1] for i in range(0, len(data), 2))
        return data.rstrip(b"\0").decode("utf-8", errors="replace")
    return float(decode(point, np.frombuffer(data, dtype=np.uint8).reshape(1, -1))[0])


TRUTH = {"true": 1, "false": 0}  # words an operator may write for a bit or a bool


def number_from_text(text: str) -> float:
    """'230.5' -> 230.5, ' True ' -> 1.0: the CLI and scenario files send values as text."""
    word = text.strip().lower()
    if word in TRUTH:
        return float(TRUTH[word])
    try:
        return float(word)
    except ValueError:
        raise ValueError(f"takes a number, not {text!r}") from None


def whole_from_text(text: str) -> int:
    """'1234' -> 1234, '0x10' -> 16, 'true' -> 1: a raw register or bit; ValueError if not."""
    word = text.strip().lower()
    if word in TRUTH:
        return TRUTH[word]
    return int(word, 0)


def operator_value(point: Point, value: float | bool | str | None) -> float | str:
    """An operator's value for `point`, as `encode_exact` takes it: text is read as a number
    unless the point holds text, a bool as 0 or 1, no value as 0."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and point.type is not PointType.STRING:
        return number_from_text(value)
    return 0.0 if value is None else value


def encode_exact(point: Point, value: float | str) -> bytes:
    """One engineering value -> the point's bytes, or ValueError saying why it does not fit.

    Unlike `encode`, which clamps as firmware would, an operator's value that the point's
    type cannot hold is refused. Integer types round to the point's resolution (its scale).
    """
    if point.type is PointType.STRING and not point.table.is_bits:
        if not isinstance(value, str):
            raise ValueError("a string point takes text")
        room = 2 * point.width
        if len(value.encode("utf-8")) > room:
            raise ValueError(f"at most {room} bytes of UTF-8 fit in its {point.width} registers")
        return encode_text(point, value)
    if isinstance(value, str):
        raise ValueError(f"a {point.type} point takes a number, not text")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("takes a finite number")
    if point.table.is_bits or point.type is PointType.BOOL:
        if number not in (0.0, 1.0):
            raise ValueError("takes 0, 1, true or false")
        return encode_one(point, number)
    dtype = np.dtype(_DTYPES[point.type])
    raw = number / point.scale
    if dtype.kind in "iu":
        low, high = _limits(dtype)
        if not low <= round(raw) <= high:
            span = sorted((low * point.scale, high * point.scale))
            raise ValueError(
                f"{point.type} with scale {point.scale:g} holds {span[0]:g} to {span[1]:g}"
            )
    elif abs(raw) > float(np.finfo(dtype).max):
        raise ValueError(f"too large for {point.type}")
    return encode_one(point, number)


def at_precision(point: Point, value: float) -> float:
    """`value` (a decoded engineering value) as its type holds it: a float32 at the fewest
    digits that read back as the same float32 (230.46475, not 230.46475219726562); an
    integer type with a scale at the scale's decimals (23.1, not 23.100000000000001)."""
    if not math.isfinite(value):
        return value
    if point.type is PointType.FLOAT32:
        raw = np.float32(value / point.scale)
        for digits in range(1, 10):
            shown = float(f"{value:.{digits}g}")
            if np.float32(shown / point.scale) == raw:
                return shown
        return value
    if point.type is PointType.FLOAT64 or point.scale == 1.0:
        return value
    exponent = Decimal(repr(point.scale)).normalize().as_tuple().exponent
    return round(value, max(0, -int(exponent))) if isinstance(exponent, int) else value
