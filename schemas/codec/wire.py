"""Avro's zigzag varints and the map<double> wire layout, shared by encoder and decoder.

Varints of values below 2^14 come from a table; above it the low 14 bits come
from a table and the rest from a small cache (the timestamps of one batch share
it). :func:`_map_double_layout` is the exact byte layout of a one-block
``map<double>``, which the encoder writes and the decoder learns as a template.
"""

from __future__ import annotations

from collections.abc import Sequence

_SMALL = 1 << 14  # unsigned values below this encode in one or two bytes
_MAX_TEMPLATE_KEYS = 64


def _uvarint_loop(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


#: Varint of every unsigned value below 2^14 (zigzagged longs -8192..8191).
_VARINT: tuple[bytes, ...] = tuple(_uvarint_loop(n) for n in range(_SMALL))
#: The low 14 bits of a larger value: two bytes, both with the continuation bit.
_LOW14: tuple[bytes, ...] = tuple(bytes((n & 0x7F | 0x80, n >> 7 | 0x80)) for n in range(_SMALL))
#: Varint of ``n >> 14`` for large values; timestamps of one batch share it.
_HIGH: dict[int, bytes] = {}


def _uvarint(n: int) -> bytes:
    """Varint of a zigzagged 64-bit long ``n``; OverflowError when out of range."""
    if 0 <= n < _SMALL:
        return _VARINT[n]
    if n < 0 or n >> 64:
        raise OverflowError(f"{n} is outside the zigzag range of a 64-bit long")
    high = n >> 14
    tail = _HIGH.get(high)
    if tail is None:
        tail = _uvarint_loop(high)
        if len(_HIGH) < 4096:
            _HIGH[high] = tail
    return _LOW14[n & 0x3FFF] + tail


def _map_double_layout(keys: Sequence[str], prefix: bytes = b"") -> list[bytes]:
    """Wire segments around the doubles of a one-block map<double>: count+key0, key1, …, 0;
    ``prefix`` (a union's branch index) before the count."""
    segments = []
    for i, key in enumerate(keys):
        raw = key.encode()
        head = prefix + _uvarint(len(keys) << 1) if i == 0 else b""
        segments.append(head + _uvarint(len(raw) << 1) + raw)
    segments.append(b"\x00")
    return segments
