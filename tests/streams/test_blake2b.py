"""The compiled sampling hash is hashlib's keyed BLAKE2b (8-byte digest), id for id: the
reservoirs' samples must not change with how u is computed (streams/sampling/blake2b.py)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whystream.streams.sampling.blake2b import blake2b_u64


def hashlib_u64(ids: list[str], key: bytes) -> np.ndarray:
    return np.array([int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8, key=key).digest(), "little")
                     for i in ids], dtype=np.uint64)


@pytest.mark.parametrize("key", [b"", b"k", bytes(range(64)), b"salt" * 8])
def test_every_length_across_the_block_boundaries(key):
    """Empty ids, one block, exactly 128 bytes, one past it, several blocks; ASCII and not."""
    ids = ["x" * n for n in range(0, 400)] + ["é" * n for n in range(0, 140)] + ["", "\U0001f600" * 40]
    assert (blake2b_u64(ids, key) == hashlib_u64(ids, key)).all()


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.text(max_size=300), max_size=40), key=st.binary(max_size=64))
def test_any_ids_and_key(ids, key):
    assert (blake2b_u64(ids, key) == hashlib_u64(ids, key)).all()


def test_a_key_longer_than_blake2b_takes_is_refused():
    with pytest.raises(ValueError, match="at most 64 bytes"):
        blake2b_u64(["a"], bytes(65))
