"""Duplicates: generations and the dedup horizon of a partition's reservoirs.

n counts distinct prediction_ids. A *generation* is the stretch of a
partition's candidates that share a window start between two resets (all the
windows of one time window, every model version and stratum). Each remembers
every prediction_id that arrived in it; a candidate counts only if its id is in
none of the partition's last `dedup_windows` + 1 generations (its own
included): a decision sent again, even after its window closed or the partition
reset, is counted once. What a generation remembers depends only on the events
in it, never on what came before, so a replay that re-reads the generations
rebuilds the same horizon. A partition that saw no candidate for `forget_idle_ms`
(wall clock) forgets its horizon (recorded like a reset, `Reset.forget`), so that
its commit does not wait for the next candidates.

That is why a commit stays at the first offset of the oldest generation in the
horizon (`Reservoirs.hold`), not at the first open window (`frontier`): the
successor re-reads the horizon's events, and the windows among them that started
before the recorded frontier were handed over already: it rebuilds them without
handing them over again (`Reservoirs.resume`'s live_from).
"""

from __future__ import annotations

from collections import deque

import numpy as np


class Seen:
    """A set of hashes u: sorted runs, merged as they pile up (sizes stay geometric,
    so n hashes added in pieces cost O(n log n))."""

    __slots__ = ("runs",)

    def __init__(self, runs: list[np.ndarray] | None = None):
        self.runs: list[np.ndarray] = runs or []

    def unseen(self, u: np.ndarray) -> np.ndarray:
        """Per u (any order): whether it is not among the hashes seen so far."""
        mask = np.ones(len(u), dtype=bool)
        for run in self.runs:
            mask &= run.take(run.searchsorted(u), mode="clip") != u
        return mask

    def add(self, u: np.ndarray) -> None:
        """Add hashes not seen before (sorted, distinct)."""
        if not len(u):
            return
        self.runs.append(u)
        while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
            last = self.runs.pop()
            self.runs[-1] = np.sort(np.concatenate((self.runs[-1], last)))


class Generation:
    """The candidates of one time window of a partition between two resets: every id that arrived."""

    __slots__ = ("key", "first_offset", "seen")

    def __init__(self, key: tuple[int, int], first_offset: int):
        self.key = key  # (reset epoch, window start)
        self.first_offset = first_offset
        self.seen = Seen()


class Horizon:
    """A partition's last `dedup_windows` + 1 generations: the ids a new candidate is checked against."""

    __slots__ = ("generations", "epoch", "_before", "next_offset", "last_event_ms")

    def __init__(self, dedup_windows: int):
        self.generations: deque[Generation] = deque(maxlen=dedup_windows + 1)
        self.epoch = 0  # resets so far: the first candidate after one starts a generation
        self.next_offset = 0  # the offset after the last candidate: where a reset happens
        self.last_event_ms = 0  # wall clock
        self._before: Seen | None = None  # the generations before the current one, as one run

    def generation(self, start: int, first_offset: int) -> Generation:
        """The generation of a candidate of window `start` arriving now (a new one if the window moved on)."""
        key = (self.epoch, start)
        if not self.generations or self.generations[-1].key != key:
            self.generations.append(Generation(key, first_offset))
            self._before = None
        return self.generations[-1]

    def before(self) -> Seen:
        """The ids of the generations before the current one (they no longer change)."""
        if self._before is None:
            runs = [run for g in list(self.generations)[:-1] for run in g.seen.runs]
            self._before = Seen([np.sort(np.concatenate(runs))] if runs else [])  # unseen() allows repeats
        return self._before

    def first_offset(self) -> int:
        return self.generations[0].first_offset
