"""Reservoirs: a weighted random sample of the candidates (the decisions that are not
priority, streams/sampling/priority.py), per partition, model version, stratum and window.

Reservoirs: deterministic bottom-k sampling
-------------------------------------------
Each candidate gets u = a 64-bit blake2b hash of its prediction_id (keyed with
an optional salt). A reservoir keeps the k candidates with the smallest u
(ties, i.e. the same prediction_id seen twice, broken by offset). Because the
hash behaves like an independent uniform draw per id, the k smallest of n are a
uniform random sample without replacement of size m = min(k, n), whatever the
order of arrival; and because it is a hash, a worker that re-reads the same
events after a crash selects exactly the same ones again (dedup in Redis then
skips those already published). Each selected event carries the inclusion
weight n / m, so the weights of one reservoir add up to n exactly and weighted
sums over explanations estimate population totals without bias.

Reservoir key: (partition, model_version, stratum, window_start), with tumbling
event-time windows of `window_ms`. Keying by partition makes the sample
independent of how partitions are spread over workers, and lets a revoked
partition's reservoirs simply be dropped: the new owner rebuilds them by
re-reading from the committed offset (`hold`, below).

Windows, per partition
----------------------
- watermark = the largest event_time of the candidates seen so far, in offset
  order. A window closes once the watermark reaches its end (an event of a
  later window arrived).
- Late events: an event whose own window has already closed is put into the
  window that holds the watermark. Put differently, every event goes to the
  watermark's window at the moment it arrives (its own window if it is on time).
  Windows are therefore decided by arrival order, not by how arrivals are cut
  into batches, so a replay from the committed offset rebuilds the same windows.
- Reset by wall clock: when a partition saw no candidate for `idle_close_ms`
  (idle), or one of its windows has been open `max_open_ms` (one event far
  ahead, within the skew streams/event_time.py accepts, cannot hold a busy
  partition's windows open), all its windows close and its watermark is
  forgotten; the partition starts afresh at the next candidate. Where that
  happened is not in the log, so the engine records each reset (the offset it
  happened at, `take_resets`) on `sampling-checkpoints` before the reset's
  samples are published, and a worker replaying the partition makes the same
  resets at the same offsets (`resume`) and none of its own until the replay is
  over.

Duplicates are counted once across the partition's last windows (the dedup
horizon, streams/sampling/horizon.py), and a commit stays at the horizon's start
(`hold`). So a crashed worker's successor counts every decision in the same
window as the worker did, and its samples are those the worker published (which
dedup then skips), whatever wall clock and batch cuts it meets, provided it is
given the same candidates: events the engine explains for a reason a replay
cannot see alike (a new version's first events, counted in Redis) are fed
`sampled=False`, so they still place windows and are remembered, and only n can
differ by them.

Strata: the first `max_strata` strata of a (partition, model version, window)
get reservoirs of their own; later ones share the reservoir of stratum OTHER
(`other`).

`add` expects the candidates of a partition in offset order across calls (within
one call they are ordered by offset anyway): give it all model versions of a
batch in one call rather than one call per version, otherwise an event of the
second call may see the watermark of events that came after it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from whystream.streams.sampling.blake2b import blake2b_u64
from whystream.streams.sampling.config import SamplingConfig
from whystream.streams.sampling.horizon import Horizon

OTHER = "other"  # the stratum of a window's strata beyond max_strata


@dataclass(frozen=True)
class ClosedWindow:
    """A reservoir whose window closed: its key, how many candidates fell in it
    (n) and the selected (item, inclusion weight) pairs, ordered by hash."""

    partition: int
    model_version: str
    stratum: str
    window_start: int
    window_end: int
    n: int
    selected: list[tuple[Any, float]]


@dataclass(frozen=True, order=True)
class Reset:
    """A partition's windows closed by wall clock at `offset` (the candidate after its last one),
    and with `forget` its dedup horizon dropped too: what a replay of the partition needs to do
    the same at the same place."""

    partition: int
    offset: int
    forget: bool = False


class _Reservoir:
    """The k smallest (u, offset) of one window so far, with their items."""

    __slots__ = ("u", "offsets", "items", "n", "first_offset", "opened_ms", "handed_over")

    def __init__(self, opened_ms: int, first_offset: int, handed_over: bool):
        self.u = np.empty(0, dtype=np.uint64)
        self.offsets = np.empty(0, dtype=np.int64)
        self.items: list = []
        self.n = 0  # distinct prediction_ids
        self.first_offset = first_offset
        self.opened_ms = opened_ms  # wall clock
        self.handed_over = handed_over  # rebuilt by a replay: the crashed worker handed it over already


class _Partition:
    __slots__ = ("watermark", "last_event_ms", "windows", "strata")

    def __init__(self):
        self.watermark: int | None = None
        self.last_event_ms = 0
        self.windows: dict[tuple[str, str, int], _Reservoir] = {}
        self.strata: dict[tuple[str, int], set[str]] = {}  # (version, window start) -> its own strata


def _codes(values: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Integer codes for a sequence of strings (first-seen order) and the distinct values."""
    values = values if isinstance(values, list) else list(values)
    first = values[0]
    if values.count(first) == len(values):  # the common case: one model version per call
        return np.zeros(len(values), dtype=np.int64), [first]
    table = dict.fromkeys(values)  # distinct, in first-seen order; then each code by a C-level lookup
    for code, value in enumerate(table):
        table[value] = code
    return np.fromiter(map(table.__getitem__, values), dtype=np.int64, count=len(values)), list(table)


class Reservoirs:
    """Bottom-k reservoirs per (partition, model version, stratum, window)."""

    def __init__(self, config: SamplingConfig, salt: bytes = b""):
        self.config = config
        # blake2b keys are at most 64 bytes; longer salts are folded into one.
        self._key = salt if len(salt) <= 64 else hashlib.blake2b(salt).digest()
        self._partitions: dict[int, _Partition] = {}
        self._horizons: dict[int, Horizon] = {}  # outlive resets: a copy after one is still a copy
        self._closed: list[ClosedWindow] = []  # closed by a replayed reset inside add(): handed over next
        self._resets: list[Reset] = []  # made by wall clock, not yet taken by the engine
        # Replays (resume): the resets to repeat, where handing over starts again, no wall-clock resets.
        self._pending: dict[int, list[Reset]] = {}
        self._live_from: dict[int, int] = {}
        self._replaying: set[int] = set()

    def hashes(self, prediction_ids: Sequence[str]) -> np.ndarray:
        """u per prediction_id: the first 8 bytes of keyed blake2b, little-endian uint64 (one
        compiled pass, streams/sampling/blake2b.py)."""
        return blake2b_u64(prediction_ids, self._key)

    # -- replays ------------------------------------------------------------------------------------

    def resume(self, partition: int, live_from: int, resets: Sequence[Reset]) -> None:
        """The partition is replayed from its committed offset: windows that start before
        `live_from` were handed over by the worker before (rebuild them, hand nothing over), the
        partition repeats `resets`, and makes none of its own by wall clock until `replay_done`."""
        self._live_from[partition] = live_from
        self._pending[partition] = sorted(set(resets))
        self._replaying.add(partition)

    def reached(self, partition: int, next_offset: int) -> None:
        """The replay handled the partition up to `next_offset`: a replayed reset at or before it
        that no candidate reached (it happened after the partition's last candidate, by an idle
        tick) is made now, as it was then; one still ahead stays in force until it is reached."""
        pending = self._pending.get(partition)
        while pending and pending[0].offset <= next_offset:
            reset = pending.pop(0)
            if partition in self._partitions:
                self._closed += self._reset(partition)
            if reset.forget:
                self._horizons.pop(partition, None)

    def replay_done(self, partition: int) -> None:
        """The replay of the partition is over: wall-clock resets are its own again."""
        self._replaying.discard(partition)

    # -- candidates ---------------------------------------------------------------------------------

    def add(self, partition: int, offsets: np.ndarray, u: np.ndarray, model_versions: Sequence[str],
            strata: Sequence[str], event_times: np.ndarray, items: Sequence[Any], now_ms: int,
            sampled: np.ndarray | None = None) -> None:
        """Feed the candidates of one partition (parallel sequences; `u`: their ids' `hashes`,
        computed once per batch by the caller); `items` are
        opaque payloads handed back for the selected events when their window closes.
        `sampled` False: an event explained anyway for a reason a replay may not see alike (the
        first events of a new version): it places windows and is remembered as seen like any
        candidate, so that a replay cuts the same windows, but is neither counted nor selected."""
        n = len(u)
        offsets = np.asarray(offsets, dtype=np.int64)
        u = np.asarray(u, dtype=np.uint64)
        event_times = np.asarray(event_times, dtype=np.int64)
        sampled = np.ones(n, dtype=bool) if sampled is None else np.asarray(sampled, dtype=bool)
        if not (len(offsets) == len(model_versions) == len(strata) == len(event_times) == len(items) == len(sampled)
                == n):
            raise ValueError("Reservoirs.add: offsets, u, versions, strata, event_times, items and sampled differ "
                             "in length")
        pending = self._pending.get(partition)
        if n and pending and pending[0].offset <= offsets.max():  # a replayed reset falls inside: split there
            arrival = np.argsort(offsets, kind="stable")
            reset = pending.pop(0)
            cut = int(np.searchsorted(offsets[arrival], reset.offset))

            def rows(at: list[int]) -> tuple:
                return (offsets[at], u[at], [model_versions[i] for i in at],
                        [strata[i] for i in at], event_times[at], [items[i] for i in at])

            before, after = arrival[:cut].tolist(), arrival[cut:].tolist()
            if before:
                self._add(partition, *rows(before), now_ms, sampled[before])
            if partition in self._partitions:
                self._closed += self._reset(partition)
            if reset.forget:
                self._horizons.pop(partition, None)
            self.add(partition, *rows(after), now_ms, sampled[after])
        elif n:
            self._add(partition, offsets, u, model_versions, strata, event_times, items, now_ms, sampled)

    def _add(self, partition, offsets, u, model_versions, strata, event_times, items, now_ms, sampled) -> None:
        n = len(u)
        state = self._partitions.get(partition)
        if state is None:
            state = self._partitions[partition] = _Partition()
        horizon = self._horizons.get(partition)
        if horizon is None:
            horizon = self._horizons[partition] = Horizon(self.config.dedup_windows)
        state.last_event_ms = horizon.last_event_ms = now_ms
        horizon.next_offset = max(horizon.next_offset, int(offsets.max()) + 1)
        window_ms, k = self.config.window_ms, self.config.budget
        live_from = self._live_from.get(partition, -1)

        version_codes, versions = _codes(model_versions)
        stratum_codes, stratum_names = _codes(strata)

        # Every event joins the window holding the watermark as of its arrival (itself included).
        # (Array methods rather than np.* functions here: fewer Python calls per small batch.)
        arrival = offsets.argsort(kind="stable")
        watermark = np.maximum.accumulate(event_times[arrival])
        if state.watermark is not None:
            np.maximum(watermark, state.watermark, out=watermark)
        state.watermark = int(watermark[-1])
        arrival_starts = watermark // window_ms * window_ms
        starts = np.empty(n, dtype=np.int64)
        starts[arrival] = arrival_starts

        # A candidate counts if its id is new to the horizon: checked generation by generation, in arrival order.
        counted = np.zeros(n, dtype=bool)
        edges = [0, *((arrival_starts[1:] != arrival_starts[:-1]).nonzero()[0] + 1).tolist(), n]
        for a, b in zip(edges[:-1], edges[1:]):
            rows = arrival[a:b]
            generation = horizon.generation(int(arrival_starts[a]), int(offsets[rows[0]]))
            arrived_u = u[rows]
            by_u = arrived_u.argsort(kind="stable")  # the first arrival of an id comes first
            sorted_u = arrived_u[by_u]
            first = np.ones(len(rows), dtype=bool)
            first[1:] = sorted_u[1:] != sorted_u[:-1]
            distinct, at = sorted_u[first], rows[by_u[first]]
            new_here = generation.seen.unseen(distinct)
            counted[at] = new_here & horizon.before().unseen(distinct) & sampled[at]
            generation.seen.add(distinct[new_here])

        # Group by (version, stratum, window); inside a group ascending (u, offset).
        order = np.lexsort((offsets, u, starts, stratum_codes, version_codes))
        g_version, g_stratum, g_start = version_codes[order], stratum_codes[order], starts[order]
        change = (g_version[1:] != g_version[:-1]) | (g_stratum[1:] != g_stratum[:-1]) | (g_start[1:] != g_start[:-1])
        bounds = np.concatenate(([0], change.nonzero()[0] + 1, [n]))
        sorted_offsets = offsets[order]
        group_first = np.minimum.reduceat(sorted_offsets, bounds[:-1])
        sorted_u = u[order]
        # Per group, as Python ints: its key's parts, first offset, and the range of its counted candidates.
        counted_at = counted[order].nonzero()[0]
        heads = bounds[:-1]
        lows, highs = counted_at.searchsorted(heads).tolist(), counted_at.searchsorted(bounds[1:]).tolist()
        keys = zip(g_version[heads].tolist(), g_stratum[heads].tolist(), g_start[heads].tolist(), group_first.tolist())
        groups = list(zip(keys, lows, highs))

        # Groups in order of their first arrival: which strata pool as OTHER must not depend on batch cuts.
        for g in group_first.argsort(kind="stable").tolist():
            (version, stratum, start, first), low, high = groups[g]
            key = self._reservoir_key(state, versions[version], stratum_names[stratum], start)
            res = state.windows.get(key)
            if res is None:
                res = state.windows[key] = _Reservoir(now_ms, first, handed_over=first < live_from)
            res.first_offset = min(res.first_offset, first)
            if low == high:
                continue
            res.n += high - low
            top = counted_at[low:min(high, low + k)]  # the group's k smallest that count
            if len(res.items) == k and sorted_u[top[0]] > res.u[-1]:
                continue  # nothing in this batch beats the current k smallest
            self._merge(res, sorted_u[top], sorted_offsets[top], order[top], items, k)

    def _reservoir_key(self, state: _Partition, version: str, stratum: str, start: int) -> tuple[str, str, int]:
        """The reservoir key; a stratum beyond the first max_strata of its version and window pools as OTHER."""
        strata = state.strata.get((version, start))
        if strata is None:
            strata = state.strata[(version, start)] = set()
        if stratum not in strata:
            if len(strata) >= self.config.max_strata:
                return version, OTHER, start
            strata.add(stratum)
        return version, stratum, start

    @staticmethod
    def _merge(res: _Reservoir, u: np.ndarray, offsets: np.ndarray, at: np.ndarray, items: Sequence[Any],
               k: int) -> None:
        """Keep the k smallest of the reservoir and these candidates (at most k, at `at` in items).
        An item (a record and a copy of its row) is made only for a candidate that is kept."""
        if not res.items:
            res.u, res.offsets, res.items = u.copy(), offsets.copy(), [items[i] for i in at.tolist()]
            return
        held = len(res.items)
        all_u = np.concatenate((res.u, u))
        all_offsets = np.concatenate((res.offsets, offsets))
        keep = np.lexsort((all_offsets, all_u))[:k]
        res.u, res.offsets = all_u[keep], all_offsets[keep]
        res.items = [res.items[i] if i < held else items[at[i - held]] for i in keep.tolist()]

    # -- closing ------------------------------------------------------------------------------------

    def close_due(self, now_ms: int) -> list[ClosedWindow]:
        """Hand over the windows that closed (by watermark, by a replayed reset, or by a reset of
        an idle or long-open partition), in a deterministic order: partition, window start, model
        version, stratum. Resets made here are recorded for `take_resets`."""
        closed, self._closed = self._closed, []
        window_ms = self.config.window_ms
        for partition in sorted(self._partitions):
            state = self._partitions[partition]
            if partition not in self._replaying and (
                    now_ms - state.last_event_ms >= self.config.idle_close_ms
                    or any(now_ms - res.opened_ms >= self.config.max_open_ms for res in state.windows.values())):
                self._resets.append(Reset(partition, self._horizons[partition].next_offset))
                closed += self._reset(partition)
                continue
            current = state.watermark // window_ms * window_ms
            closed += self._hand_over(partition, state, [key for key in state.windows if key[2] < current])
        for partition, horizon in sorted(self._horizons.items()):
            if (partition not in self._partitions and partition not in self._replaying
                    and now_ms - horizon.last_event_ms >= self.config.forget_idle_ms):
                # Quiet for long: forget its candidates, so that its commit (held at the horizon) moves on.
                self._resets.append(Reset(partition, horizon.next_offset, forget=True))
                del self._horizons[partition]
        return closed

    def _reset(self, partition: int) -> list[ClosedWindow]:
        """Close every window of the partition and forget its watermark: it starts afresh."""
        state = self._partitions.pop(partition)
        self._horizons[partition].epoch += 1
        return self._hand_over(partition, state, list(state.windows))

    def _hand_over(self, partition: int, state: _Partition, due: list) -> list[ClosedWindow]:
        closed = []
        for key in sorted(due, key=lambda key: (key[2], key[0], key[1])):
            res = state.windows.pop(key)
            state.strata.pop((key[0], key[2]), None)
            if res.handed_over or not res.items:  # handed over before the replay; or only copies of earlier ones
                continue
            weight = res.n / len(res.items)
            closed.append(ClosedWindow(partition, key[0], key[1], key[2], key[2] + self.config.window_ms, res.n,
                                       [(item, weight) for item in res.items]))
        return closed

    def take_resets(self) -> list[Reset]:
        """The wall-clock resets made since the last call (to be recorded before their samples go out)."""
        resets, self._resets = self._resets, []
        return resets

    # -- offsets ------------------------------------------------------------------------------------

    def hold(self, partition: int, position: int) -> int:
        """Where a commit of the partition must stay (at or below): the first offset of the oldest
        generation in its dedup horizon, or of an open window if older; `position` (the offset
        after the last one handled) if there is neither."""
        state = self._partitions.get(partition)
        horizon = self._horizons.get(partition)
        firsts = [res.first_offset for res in state.windows.values()] if state else []
        if horizon is not None and horizon.generations:
            firsts.append(horizon.first_offset())
        return min(firsts, default=position)

    def frontier(self, partition: int, position: int) -> int:
        """The first offset of the partition's oldest open window still to be handed over, or
        `position` if there is none: every window that starts before it has been handed over
        (by this worker, or before a replay by the one it resumes from)."""
        state = self._partitions.get(partition)
        firsts = [res.first_offset for res in state.windows.values() if not res.handed_over] if state else []
        return min(firsts, default=max(position, self._live_from.get(partition, position)))

    def drop_partition(self, partition: int) -> None:
        """Forget a revoked partition; its new owner rebuilds it from the committed offset."""
        for table in (self._partitions, self._horizons, self._pending, self._live_from):
            table.pop(partition, None)
        self._replaying.discard(partition)
        self._closed = [w for w in self._closed if w.partition != partition]
        self._resets = [r for r in self._resets if r.partition != partition]

    def open_windows(self) -> int:
        return sum(len(state.windows) for state in self._partitions.values())

    def held_items(self) -> int:
        return sum(len(res.items) for state in self._partitions.values() for res in state.windows.values())
