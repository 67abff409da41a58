"""The sampling hash of many prediction_ids in one compiled pass: keyed BLAKE2b, 8-byte digest.

`blake2b_u64(ids, key)` equals, id by id,
`int.from_bytes(hashlib.blake2b(id.encode(), digest_size=8, key=key).digest(), "little")`:
the u of streams/sampling/reservoirs.py, which decides which candidates a reservoir
keeps. It must stay that function exactly (a worker of another release replaying a
window has to pick the same samples), so this is RFC 7693's BLAKE2b written out for
numba, checked against hashlib on every length across the block boundaries
(tests/streams/test_blake2b.py). Why compiled: hashlib costs three Python calls per id
(copy, update, digest), 0.55–0.59 µs per id; this is one call per batch, 0.36 µs per id, of
which the compression is ~0.25 µs (near what C takes for a 128-byte block). The bytes are
read as words through avro_read's `_word` (the joined ids padded with `word_padding`).

The parameter block is the default one with digest length 8 and the key's length; a
non-empty key is compressed first as a block of its own (zero-padded to 128 bytes),
and, BLAKE2b's rule, is the final block only when the message is empty.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numba import njit

from whystream.wire.avro_read import _word, word_padding
from whystream.wire.packed_text import pack_utf8

_IV = np.array([0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
                0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179], dtype=np.uint64)
_SIGMA = np.array([
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3]], dtype=np.int64)
BLOCK = 128


@njit(inline="always")
def _rotr(x, n):
    return (x >> np.uint64(n)) | (x << np.uint64(64 - n))


@njit(inline="always")
def _g(a, b, c, d, x, y):
    a = a + b + x
    d = _rotr(d ^ a, 32)
    c = c + d
    b = _rotr(b ^ c, 24)
    a = a + b + y
    d = _rotr(d ^ a, 16)
    c = c + d
    b = _rotr(b ^ c, 63)
    return a, b, c, d


@njit(nogil=True, cache=True)
def _compress(h, m, counter, final, iv, sigma):
    """Mix one block (16 little-endian words m) into the state h, `counter` bytes hashed so far
    including it. The working vector is sixteen locals (kept in registers), not an array."""
    v0, v1, v2, v3, v4, v5, v6, v7 = h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]
    v8, v9, v10, v11, v13, v15 = iv[0], iv[1], iv[2], iv[3], iv[5], iv[7]
    v12 = iv[4] ^ np.uint64(counter)  # ids are far shorter than 2**64 bytes: the counter's high word stays 0
    v14 = ~iv[6] if final else iv[6]
    for r in range(12):
        s = sigma[r]
        v0, v4, v8, v12 = _g(v0, v4, v8, v12, m[s[0]], m[s[1]])
        v1, v5, v9, v13 = _g(v1, v5, v9, v13, m[s[2]], m[s[3]])
        v2, v6, v10, v14 = _g(v2, v6, v10, v14, m[s[4]], m[s[5]])
        v3, v7, v11, v15 = _g(v3, v7, v11, v15, m[s[6]], m[s[7]])
        v0, v5, v10, v15 = _g(v0, v5, v10, v15, m[s[8]], m[s[9]])
        v1, v6, v11, v12 = _g(v1, v6, v11, v12, m[s[10]], m[s[11]])
        v2, v7, v8, v13 = _g(v2, v7, v8, v13, m[s[12]], m[s[13]])
        v3, v4, v9, v14 = _g(v3, v4, v9, v14, m[s[14]], m[s[15]])
    h[0] ^= v0 ^ v8
    h[1] ^= v1 ^ v9
    h[2] ^= v2 ^ v10
    h[3] ^= v3 ^ v11
    h[4] ^= v4 ^ v12
    h[5] ^= v5 ^ v13
    h[6] ^= v6 ^ v14
    h[7] ^= v7 ^ v15


@njit(nogil=True, cache=True)
def _hash_all(words, starts, ends, key_words, key_length, iv, sigma, out):
    """out[i] = the first 8 digest bytes (little-endian) of bytes starts[i]:ends[i], keyed; the
    bytes are read as words (avro_read._word) from `words`, the padded data's uint64 view."""
    m = np.zeros(16, dtype=np.uint64)
    first = iv.copy()
    first[0] ^= np.uint64(0x01010000) ^ (np.uint64(key_length) << np.uint64(8)) ^ np.uint64(8)
    keyed = first.copy()  # the state after the key's block, for any non-empty message
    if key_length > 0:
        _compress(keyed, key_words, BLOCK, False, iv, sigma)
    h = np.empty(8, dtype=np.uint64)
    for i in range(starts.shape[0]):
        p, end = starts[i], ends[i]
        if p == end:  # empty message: the key block (or an all-zero block) is the last one
            h[:] = first
            _compress(h, key_words, BLOCK if key_length > 0 else 0, True, iv, sigma)
            out[i] = h[0]
            continue
        h[:] = keyed
        counter = BLOCK if key_length > 0 else 0
        while True:
            size = min(end - p, BLOCK)
            full = size // 8
            for k in range(full):
                m[k] = _word(words, p + 8 * k)
            rest = size - 8 * full
            if rest:
                m[full] = _word(words, p + 8 * full) & ((np.uint64(1) << np.uint64(8 * rest)) - np.uint64(1))
                full += 1
            m[full:] = 0
            counter += size
            p += size
            last = p == end
            _compress(h, m, counter, last, iv, sigma)
            if last:
                break
        out[i] = h[0]


def blake2b_u64(ids: Sequence[str], key: bytes = b"") -> np.ndarray:
    """uint64 per id: its UTF-8 bytes' keyed BLAKE2b digest (8 bytes) read little-endian."""
    if len(key) > 64:
        raise ValueError("a BLAKE2b key is at most 64 bytes")
    data, lengths = pack_utf8(ids if isinstance(ids, list) else list(ids))
    ends = np.cumsum(lengths)
    out = np.empty(len(ids), dtype=np.uint64)
    words = np.frombuffer(data + word_padding(len(data)), dtype=np.uint64)
    key_words = np.frombuffer(key + bytes(BLOCK - len(key)), dtype="<u8").astype(np.uint64)
    _hash_all(words, ends - lengths, ends, key_words, len(key), _IV, _SIGMA, out)
    return out
