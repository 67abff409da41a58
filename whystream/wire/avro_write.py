"""Writers of Avro binary and of ClickHouse RowBinary's lengths: the unsigned LEB128
varint both use, Avro's zigzag longs, and compiled (numba) versions that write into a
preallocated buffer and return the next position."""

from __future__ import annotations

import numpy as np
from numba import njit


def varint(n: int) -> bytes:
    """An unsigned little-endian base-128 varint (LEB128): Avro's longs after zigzag, and
    the lengths of ClickHouse's RowBinary."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def avro_long(n: int) -> bytes:
    """An Avro long: zigzag, then a varint."""
    return varint((n << 1) ^ (n >> 63))


@njit(nogil=True, cache=True, inline="always")
def _put_varint(out, o, u):
    """Write the unsigned varint of `u` (a uint64) at out[o]; returns the position after it."""
    while u >= 0x80:
        out[o] = np.uint8((u & np.uint64(0x7F)) | np.uint64(0x80))
        o += 1
        u >>= np.uint64(7)
    out[o] = np.uint8(u)
    return o + 1


@njit(nogil=True, cache=True, inline="always")
def _put_long(out, o, n):
    """Write the Avro long `n` (zigzag, then a varint) at out[o]; returns the position after it."""
    return _put_varint(out, o, np.uint64((n << 1) ^ (n >> 63)))


@njit(nogil=True, cache=True, inline="always")
def _put_double(out, o, v, cell, cell_bytes):
    cell[0] = v
    for k in range(8):
        out[o + k] = cell_bytes[k]
    return o + 8


@njit(nogil=True, cache=True, inline="always")
def _put_bytes(out, o, blob, start, stop):
    for k in range(start, stop):
        out[o] = blob[k]
        o += 1
    return o
