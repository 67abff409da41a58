"""Compiled readers of Avro binary (numba, inlined into the batch decoders): zigzag
varint longs, strings as byte ranges, doubles, and checks that text is plain ASCII
or valid UTF-8 without NUL.

`_word` and `_same_words` read a buffer eight bytes at a time through a uint64 view of
it (`words`): the buffer must be padded to a multiple of 8 bytes with at least 8 bytes
after the last one read (`word_padding`). Little-endian machines only, like Avro's doubles here."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True, inline="always")
def _long(buf, p, end):
    """(value, next position) of a zigzag varint at p; next = -1 if truncated or over 9 bytes."""
    result = np.int64(0)
    shift = 0
    for _ in range(9):
        if p >= end:
            return np.int64(0), -1
        b = buf[p]
        p += 1
        result |= np.int64(b & 0x7F) << shift
        if b < 0x80:
            return (result >> 1) ^ -(result & 1), p
        shift += 7
    return np.int64(0), -1


@njit(nogil=True, cache=True, inline="always")
def _string(buf, p, end):
    """(start, stop) of the string at p; stop = -1 if malformed."""
    length, p = _long(buf, p, end)
    if p < 0 or length < 0 or p + length > end:
        return 0, -1
    return p, p + length


@njit(nogil=True, cache=True, inline="always")
def _ascii_text(buf, start, stop):
    """Plain ASCII without NUL (the separator of the text output)."""
    for k in range(start, stop):
        if buf[k] >= 0x80 or buf[k] == 0:
            return False
    return True


@njit(nogil=True, cache=True, inline="always")
def _utf8_text(buf, start, stop):
    """UTF-8 as Python's strict decoder takes it (no overlong forms, no surrogates, nothing
    above U+10FFFF, no truncated sequence), and no NUL."""
    k = start
    while k < stop:
        c = buf[k]
        if c < 0x80:
            if c == 0:
                return False
            k += 1
            continue
        if 0xC2 <= c <= 0xDF:
            n, lo, hi = 1, 0x80, 0xBF
        elif c == 0xE0:
            n, lo, hi = 2, 0xA0, 0xBF
        elif c == 0xED:
            n, lo, hi = 2, 0x80, 0x9F  # not the surrogates D800..DFFF
        elif 0xE1 <= c <= 0xEF:
            n, lo, hi = 2, 0x80, 0xBF
        elif c == 0xF0:
            n, lo, hi = 3, 0x90, 0xBF
        elif 0xF1 <= c <= 0xF3:
            n, lo, hi = 3, 0x80, 0xBF
        elif c == 0xF4:
            n, lo, hi = 3, 0x80, 0x8F
        else:
            return False
        if k + n >= stop:  # the sequence runs past the string
            return False
        if not lo <= buf[k + 1] <= hi:
            return False
        for m in range(2, n + 1):
            if not 0x80 <= buf[k + m] <= 0xBF:
                return False
        k += n + 1
    return True


@njit(nogil=True, cache=True, inline="always")
def _same(buf, start, stop, blob, bstart, bstop):
    if stop - start != bstop - bstart:
        return False
    for k in range(stop - start):
        if buf[start + k] != blob[bstart + k]:
            return False
    return True


@njit(nogil=True, cache=True, inline="always")
def _double(buf, p, bits, value):
    u = np.uint64(0)
    for k in range(8):
        u |= np.uint64(buf[p + k]) << np.uint64(8 * k)
    bits[0] = u
    return value[0]


def word_padding(length: int) -> bytes:
    """Zero bytes to append to a buffer of `length` bytes before `_word` reads it."""
    return bytes(16 - length % 8)


def packed_words(texts: list[bytes]) -> np.ndarray:
    """Each text's bytes as little-endian words, zero-padded, one row per text (for `_same_words`)."""
    width = max([(len(t) + 7) // 8 for t in texts] + [1])
    words = np.zeros((len(texts), width), dtype=np.uint64)
    for row, text in enumerate(texts):
        padded = text + bytes(-len(text) % 8)
        words[row, :len(padded) // 8] = np.frombuffer(padded, dtype="<u8")
    return words


@njit(nogil=True, cache=True, inline="always")
def _word(words, q):
    """The 8 bytes at byte position q, little-endian: two aligned loads, no per-byte loop."""
    i, r = q >> 3, np.uint64((q & 7) * 8)
    return (words[i] >> r) | ((words[i + 1] << np.uint64(1)) << (np.uint64(63) - r))


@njit(nogil=True, cache=True, inline="always")
def _same_words(words, start, stop, length, packed):
    """The bytes start:stop equal a text of `length` bytes given as `packed` words (packed_words)."""
    if stop - start != length:
        return False
    k = 0
    while length - 8 * k >= 8:
        if _word(words, start + 8 * k) != packed[k]:
            return False
        k += 1
    rest = length - 8 * k
    if rest:
        mask = (np.uint64(1) << np.uint64(8 * rest)) - np.uint64(1)
        if (_word(words, start + 8 * k) & mask) != packed[k]:
            return False
    return True
