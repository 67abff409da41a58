"""Many short texts as one bytes object: their UTF-8 bytes end to end, and each one's
length in bytes. The form compiled kernels and Redis scripts take a batch of ids in
(the sampling hash, `streams/sampling/blake2b.py`; the locations of recent events,
`RedisStore.remember_locations`): one `encode` for the batch instead of one per id.

>>> data, lengths = pack_utf8(["a1", "España"])
>>> data, lengths.tolist()
(b'a1Espa\\xc3\\xb1a', [2, 7])
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pack_utf8(texts: Sequence[str]) -> tuple[bytes, np.ndarray]:
    """(the texts' UTF-8 bytes joined, int64 length in bytes of each)."""
    data = "".join(texts).encode()
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    if len(data) != int(lengths.sum()):  # not all ASCII: a character is not a byte, count id by id
        lengths = np.fromiter((len(text.encode()) for text in texts), dtype=np.int64, count=len(texts))
    return data, lengths
