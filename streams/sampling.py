"""Which decisions to explain: every priority one, and a weighted random sample
of the rest (docs/design.md, The data plane).

Priority events (always explained, inclusion weight 1) are picked by
`priority_reasons`, vectorised over a batch. Everything else is a *candidate*
and goes to `Reservoirs`.

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
re-reading from the committed offset, which is kept at or before the first
candidate of every window not yet handed over (`first_offsets`).

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
- Idle: when a partition saw no candidate for `idle_close_ms` of wall-clock
  time, all its windows close and its watermark is forgotten; the partition then
  starts afresh, exactly as a worker that replays it from the committed offset
  would. (An event of an already handed-over window that arrives after that
  opens a new reservoir for the same key: each such reservoir is its own exact
  sample, so weighted totals stay unbiased.)

- Wall clock: once a window of a partition has been open `max_open_ms`, all
  its windows close and its watermark is forgotten, as when idle: one event far
  ahead (within the skew streams/event_time.py accepts) cannot hold a busy
  partition's windows open or gather every later event into one window.

n counts distinct prediction_ids: a decision sent twice (same u) counts once in
its window, and once only when the copy comes within the partition's last
RECENT_WINDOWS closed windows. Strata: the first `max_strata` strata of a
(partition, model version, window) get reservoirs of their own; later ones
share the reservoir of stratum OTHER (`other`).

`add` expects the candidates of a partition in offset order across calls (within
one call they are ordered by offset anyway): give it all model versions of a
batch in one call rather than one call per version, otherwise an event of the
second call may see the watermark of events that came after it.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from whystream.errors import ConfigError

# Reason codes: the ExplanationEvent SamplingReason symbols.
ADVERSE = "ADVERSE"
NEAR_THRESHOLD = "NEAR_THRESHOLD"
FLAGGED = "FLAGGED"
NEW_VERSION = "NEW_VERSION"
RESERVOIR = "RESERVOIR"
RECENT_WINDOWS = 8
OTHER = "other"  # the stratum of a window's strata beyond max_strata

# Slack on the threshold band so that e.g. score 0.52, threshold 0.50, band 0.02
# counts as near despite 0.52 - 0.50 being 0.020000000000000018 in binary.
_BAND_SLACK = 1e-12


@dataclass(frozen=True)
class SamplingConfig:
    adverse_decisions: frozenset[str] = frozenset({"decline", "review"})
    near_threshold_band: float = 0.02  # |score - threshold| <= band -> priority
    new_version_events: int = 200  # the first N events of a model version never seen before are priority
    stratum_key: str = "channel"  # segment attribute used as stratum ("" = one stratum)
    budget: int = 20  # k: reservoir sample size per (partition, model version, stratum, window)
    window_ms: int = 10_000  # tumbling event-time windows
    idle_close_ms: int = 5_000  # close windows of a partition when no event arrived for this long (wall clock)
    max_open_ms: int = 30_000  # ... and when one of its windows has been open for this long (wall clock)
    max_strata: int = 50  # distinct strata per partition, model version and window; the rest pool as OTHER
    known_decisions: frozenset[str] = frozenset({"approve"})  # labels that are neither adverse nor unknown

    def __post_init__(self):
        # Labels are compared case-folded (streams/labels.py): `DECLINE` is adverse too.
        object.__setattr__(self, "adverse_decisions", frozenset(d.casefold() for d in self.adverse_decisions))
        if self.max_open_ms < 1:
            raise ConfigError("sampling.max_open_ms", f"must be a positive number of ms, got {self.max_open_ms}")
        if self.max_strata < 1:
            raise ConfigError("sampling.max_strata", f"must be at least 1, got {self.max_strata}")
        if self.budget < 1:
            raise ConfigError("sampling.budget", f"must be at least 1, got {self.budget}")
        if self.window_ms < 1:
            raise ConfigError("sampling.window_ms", f"must be a positive number of ms, got {self.window_ms}")
        if self.idle_close_ms < 0:
            raise ConfigError("sampling.idle_close_ms", f"must not be negative, got {self.idle_close_ms}")
        if not self.near_threshold_band >= 0:
            raise ConfigError("sampling.near_threshold_band", f"must not be negative, got {self.near_threshold_band}")
        if self.new_version_events < 0:
            raise ConfigError("sampling.new_version_events", f"must not be negative, got {self.new_version_events}")


def priority_reasons(decision: np.ndarray, score: np.ndarray, threshold: np.ndarray, flagged: np.ndarray,
                     new_version: np.ndarray, config: SamplingConfig, *, band_scale: float = 1.0,
                     near: bool = True) -> np.ndarray:
    """Per event the first matching priority reason, in the order ADVERSE,
    FLAGGED, NEAR_THRESHOLD, NEW_VERSION; None for a candidate (object array).

    Near threshold means |score - threshold| <= band * band_scale: the scale is 1
    for models whose scores are probabilities (binary, multiclass: the decision
    class's probability) and the reference predictions' interquartile range for
    the others (a regression's score is in its target's units); `near=False`
    (a model registered without a threshold) leaves NEAR_THRESHOLD out."""
    decision = np.asarray(decision, dtype=object)
    out = np.full(decision.shape, None, dtype=object)
    # Lowest precedence first: later assignments overwrite earlier ones.
    out[np.asarray(new_version, dtype=bool)] = NEW_VERSION
    if near:
        gap = np.abs(np.asarray(score, dtype=np.float64) - np.asarray(threshold, dtype=np.float64))
        out[gap <= (config.near_threshold_band + _BAND_SLACK) * band_scale] = NEAR_THRESHOLD
    out[np.asarray(flagged, dtype=bool)] = FLAGGED
    if config.adverse_decisions:
        folded = np.array([d.casefold() for d in decision.tolist()], dtype=object)
        out[np.isin(folded, list(config.adverse_decisions))] = ADVERSE
    return out


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


class _Seen:
    """The distinct hashes u of one window so far: sorted runs, merged as they pile
    up (sizes stay geometric, so a window of n candidates costs O(n log n))."""

    __slots__ = ("runs",)

    def __init__(self):
        self.runs: list[np.ndarray] = []

    def unseen(self, u: np.ndarray) -> np.ndarray:
        """Per u (any order): whether it is not among the hashes seen so far."""
        mask = np.ones(len(u), dtype=bool)
        for run in self.runs:
            at = np.minimum(np.searchsorted(run, u), len(run) - 1)
            mask &= run[at] != u
        return mask

    def add(self, u: np.ndarray) -> None:
        """Add hashes not seen before (sorted, distinct)."""
        self.runs.append(u)
        while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
            last = self.runs.pop()
            self.runs[-1] = np.sort(np.concatenate((self.runs[-1], last)))


class _Reservoir:
    """The k smallest (u, offset) of one window so far, with their items."""

    __slots__ = ("u", "offsets", "items", "n", "first_offset", "opened_ms", "seen")

    def __init__(self, opened_ms: int):
        self.u = np.empty(0, dtype=np.uint64)
        self.offsets = np.empty(0, dtype=np.int64)
        self.items: list = []
        self.n = 0  # distinct prediction_ids
        self.first_offset = None
        self.opened_ms = opened_ms  # wall clock
        self.seen = _Seen()


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
    table: dict[str, int] = {}
    codes = np.fromiter((table.setdefault(v, len(table)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(table)


class Reservoirs:
    """Bottom-k reservoirs per (partition, model version, stratum, window)."""

    def __init__(self, config: SamplingConfig, salt: bytes = b""):
        self.config = config
        # blake2b keys are at most 64 bytes; longer salts are folded into one.
        self._key = salt if len(salt) <= 64 else hashlib.blake2b(salt).digest()
        self._partitions: dict[int, _Partition] = {}
        # Per partition, the ids of its last RECENT_WINDOWS closed windows: a decision sent again just
        # after its window closed (the partition idled, or a window hit max_open_ms) is not counted again.
        self._recent: dict[int, deque[_Seen]] = {}
        # The same ids as one sorted run per partition, built when first needed after a window closed
        # (a closed window's ids never change): one lookup per group instead of one per run per window.
        self._recent_union: dict[int, _Seen] = {}

    def _recent_seen(self, partition: int) -> "_Seen | None":
        """The ids of the partition's last closed windows as one sorted run; None if there are none."""
        union = self._recent_union.get(partition)
        if union is None and self._recent.get(partition):
            union = _Seen()
            runs = [run for seen in self._recent[partition] for run in seen.runs]
            if runs:  # a window whose every decision was counted before holds none
                union.runs.append(np.unique(np.concatenate(runs)))
            self._recent_union[partition] = union
        return union

    def hashes(self, prediction_ids: Sequence[str]) -> np.ndarray:
        """u per prediction_id: the first 8 bytes of keyed blake2b, little-endian uint64."""
        blake2b, key = hashlib.blake2b, self._key
        digests = b"".join([blake2b(pid.encode(), digest_size=8, key=key).digest() for pid in prediction_ids])
        return np.frombuffer(digests, dtype="<u8")

    def add(self, partition: int, offsets: np.ndarray, prediction_ids: Sequence[str], model_versions: Sequence[str],
            strata: Sequence[str], event_times: np.ndarray, items: Sequence[Any], now_ms: int) -> None:
        """Feed the candidates of one partition (parallel sequences); `items` are
        opaque payloads handed back for the selected events when their window closes."""
        n = len(prediction_ids)
        offsets = np.asarray(offsets, dtype=np.int64)
        event_times = np.asarray(event_times, dtype=np.int64)
        if not (len(offsets) == len(model_versions) == len(strata) == len(event_times) == len(items) == n):
            raise ValueError("Reservoirs.add: offsets, ids, versions, strata, event_times and items differ in length")
        if n == 0:
            return
        state = self._partitions.get(partition)
        if state is None:
            state = self._partitions[partition] = _Partition()
        state.last_event_ms = now_ms
        window_ms, k = self.config.window_ms, self.config.budget

        u = self.hashes(prediction_ids)
        recent = self._recent_seen(partition)
        version_codes, versions = _codes(model_versions)
        stratum_codes, stratum_names = _codes(strata)

        # Every event joins the window holding the watermark as of its arrival (itself included).
        arrival = np.argsort(offsets, kind="stable")
        watermark = np.maximum.accumulate(event_times[arrival])
        if state.watermark is not None:
            np.maximum(watermark, state.watermark, out=watermark)
        state.watermark = int(watermark[-1])
        starts = np.empty(n, dtype=np.int64)
        starts[arrival] = watermark // window_ms * window_ms

        # Group by (version, stratum, window); inside a group ascending (u, offset).
        order = np.lexsort((offsets, u, starts, stratum_codes, version_codes))
        g_version, g_stratum, g_start = version_codes[order], stratum_codes[order], starts[order]
        change = (g_version[1:] != g_version[:-1]) | (g_stratum[1:] != g_stratum[:-1]) | (g_start[1:] != g_start[:-1])
        bounds = np.concatenate(([0], np.flatnonzero(change) + 1, [n]))
        sorted_offsets = offsets[order]
        group_first = np.minimum.reduceat(sorted_offsets, bounds[:-1])
        sorted_u = u[order]

        for g in range(len(bounds) - 1):
            begin, end = int(bounds[g]), int(bounds[g + 1])
            key = self._reservoir_key(state, versions[g_version[begin]], stratum_names[g_stratum[begin]], int(g_start[begin]))
            res = state.windows.get(key)
            if res is None:
                res = state.windows[key] = _Reservoir(now_ms)
            first = int(group_first[g])
            res.first_offset = first if res.first_offset is None else min(res.first_offset, first)
            # A prediction_id sent again (same u) counts once: n is the number of distinct decisions.
            group_u = sorted_u[begin:end]
            fresh = np.ones(end - begin, dtype=bool)
            fresh[1:] = group_u[1:] != group_u[:-1]
            if res.n:
                fresh &= res.seen.unseen(group_u)
            if recent is not None:
                fresh &= recent.unseen(group_u)
            fresh_at = np.flatnonzero(fresh)
            if not len(fresh_at):
                continue
            res.seen.add(group_u[fresh_at])
            res.n += len(fresh_at)
            top = begin + fresh_at[:k]
            new_u = sorted_u[top]
            if len(res.items) == k and new_u[0] > res.u[-1]:
                continue  # nothing in this batch beats the current k smallest
            self._merge(res, new_u, sorted_offsets[top], [items[i] for i in order[top]], k)

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
    def _merge(res: _Reservoir, u: np.ndarray, offsets: np.ndarray, items: list, k: int) -> None:
        if not res.items:
            res.u, res.offsets, res.items = u.copy(), offsets.copy(), items
            return
        all_u = np.concatenate((res.u, u))
        all_offsets = np.concatenate((res.offsets, offsets))
        keep = np.lexsort((all_offsets, all_u))[:k]
        all_items = res.items + items
        res.u, res.offsets, res.items = all_u[keep], all_offsets[keep], [all_items[i] for i in keep]

    def close_due(self, now_ms: int) -> list[ClosedWindow]:
        """Hand over the windows that closed (by watermark or by idle partition),
        in a deterministic order: partition, window start, model version, stratum."""
        window_ms = self.config.window_ms
        closed: list[ClosedWindow] = []
        for partition in sorted(self._partitions):
            state = self._partitions[partition]
            stale = any(now_ms - res.opened_ms >= self.config.max_open_ms for res in state.windows.values())
            if stale or now_ms - state.last_event_ms >= self.config.idle_close_ms:
                # Idle, or a window held open too long (an event far ahead moved the watermark):
                # close everything and forget the watermark too: start afresh, like a replay.
                due = list(state.windows)
                del self._partitions[partition]
            else:
                current = state.watermark // window_ms * window_ms
                due = [key for key in state.windows if key[2] < current]
            for key in sorted(due, key=lambda key: (key[2], key[0], key[1])):
                res = state.windows.pop(key)
                state.strata.pop((key[0], key[2]), None)
                self._recent.setdefault(partition, deque(maxlen=RECENT_WINDOWS)).append(res.seen)
                self._recent_union.pop(partition, None)
                if not res.items:  # only decisions counted in an earlier window: nothing to hand over
                    continue
                weight = res.n / len(res.items)
                closed.append(ClosedWindow(partition, key[0], key[1], key[2], key[2] + window_ms, res.n,
                                           [(item, weight) for item in res.items]))
        return closed

    def first_offsets(self, partition: int) -> set[int]:
        """The first candidate offset of each open window of the partition: a commit
        stays below their min(), never at or past it, until the window is handed over."""
        state = self._partitions.get(partition)
        return {res.first_offset for res in state.windows.values()} if state else set()

    def drop_partition(self, partition: int) -> None:
        """Forget a revoked partition; its new owner rebuilds it from the committed offset."""
        self._partitions.pop(partition, None)
        self._recent.pop(partition, None)
        self._recent_union.pop(partition, None)

    def open_windows(self) -> int:
        return sum(len(state.windows) for state in self._partitions.values())

    def held_items(self) -> int:
        return sum(len(res.items) for state in self._partitions.values() for res in state.windows.values())
