"""Model versions that cannot be served right now, and when to try them again.

A registered version whose files are corrupt or unreadable, or that the
TreeSHAP kernel cannot explain (an objective it does not support), would
otherwise be loaded again for every event that names it, and the error would
escape the ingest loop. Instead the loader's reason is kept here: events of the
version are dead-lettered as MODEL_UNAVAILABLE with that reason, and the load
is tried again only after a back-off (`first_s`, doubling up to `max_s`), so a
version fixed in the registry (or a worker upgraded) is picked up without a
restart and a broken one costs one load attempt per back-off, not per event.

>>> q = Quarantine(first_s=1.0, clock=lambda: 0.0)
>>> q.hold(("fraud", "v1"), "unsupported objective multiclass")
>>> q.reason(("fraud", "v1"))
'unsupported objective multiclass'
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Hashable

from whystream.errors import WhystreamError


class ModelUnavailable(WhystreamError):
    """A registered model version that cannot be served now; the message says why."""


@dataclass
class _Held:
    reason: str
    retry_at: float
    backoff_s: float


class Quarantine:
    def __init__(self, first_s: float = 30.0, max_s: float = 600.0, clock: Callable[[], float] = time.monotonic):
        self.first_s, self.max_s, self.clock = first_s, max_s, clock
        self._held: dict[Hashable, _Held] = {}

    def reason(self, key: Hashable) -> str | None:
        """Why `key` is held, while its back-off lasts; None once it may be tried again (or was never held)."""
        held = self._held.get(key)
        if held is None or self.clock() >= held.retry_at:
            return None
        return held.reason

    def hold(self, key: Hashable, reason: str) -> None:
        """The load of `key` failed (again): hold it, twice as long as last time."""
        previous = self._held.get(key)
        backoff = self.first_s if previous is None else min(previous.backoff_s * 2, self.max_s)
        self._held[key] = _Held(reason, self.clock() + backoff, backoff)

    def release(self, key: Hashable) -> None:
        """`key` loaded fine."""
        self._held.pop(key, None)

    def __len__(self) -> int:
        return len(self._held)
