"""Which event times to trust.

An event's `event_time` decides its reservoir window (streams/sampling/): one
event stamped in the year 3000, or in microseconds instead of milliseconds,
would pull a partition's watermark so far ahead that every later event lands
in one window that never closes. Such events are dead-lettered (EVENT_TIME):

- implausible as milliseconds since the epoch: before `earliest_ms`
  (2000-01-01; seconds instead of milliseconds land in 1970) or after
  `latest_ms` (2100-01-01; microseconds land tens of thousands of years ahead);
- further ahead of the message's broker timestamp than `max_ahead_ms`
  (default 5 minutes; the wall clock when the transport gives no timestamp).

Events from the past are accepted: late events are the sampler's business.

>>> rule = EventTimeRule()
>>> rule.bad(np.array([1_700_000_000_000, 1_700_000_000, 1_700_000_000_000_000]),
...          np.array([1_700_000_000_000, -1, -1]), now_ms=1_700_000_000_000).tolist()
[False, True, True]
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from whystream.errors import ConfigError


def _iso(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return "out of calendar range"


@dataclass(frozen=True)
class EventTimeRule:
    max_ahead_ms: int = 5 * 60_000
    earliest_ms: int = 946_684_800_000  # 2000-01-01T00:00:00Z
    latest_ms: int = 4_102_444_800_000  # 2100-01-01T00:00:00Z

    def __post_init__(self):
        if self.max_ahead_ms < 0:
            raise ConfigError("event_time.max_ahead_ms", f"must not be negative, got {self.max_ahead_ms}")

    def reference(self, broker_ms: np.ndarray, now_ms: int) -> np.ndarray:
        """The broker timestamp where there is one, else `now_ms`."""
        return np.where(broker_ms > 0, broker_ms, now_ms)

    def bad(self, event_time: np.ndarray, broker_ms: np.ndarray, now_ms: int) -> np.ndarray:
        """Per event: whether its time is not to be trusted (bool array)."""
        event_time = np.asarray(event_time, dtype=np.int64)
        ahead = event_time - self.reference(np.asarray(broker_ms, dtype=np.int64), now_ms)
        return (event_time < self.earliest_ms) | (event_time > self.latest_ms) | (ahead > self.max_ahead_ms)

    def reason(self, event_time: int, broker_ms: int, now_ms: int) -> str:
        """Why this event's time was refused, for a person."""
        if event_time < self.earliest_ms or event_time > self.latest_ms:
            return (f"event_time {event_time} ({_iso(event_time)}) is not plausible as milliseconds since the "
                    f"epoch (accepted: {_iso(self.earliest_ms)} to {_iso(self.latest_ms)}); seconds or "
                    "microseconds instead of milliseconds?")
        against = "broker timestamp" if broker_ms > 0 else "worker clock"
        reference = broker_ms if broker_ms > 0 else now_ms
        return (f"event_time {_iso(event_time)} is {(event_time - reference) / 1000:.0f} s ahead of the message's "
                f"{against} ({_iso(reference)}); at most {self.max_ahead_ms / 1000:g} s is accepted. Check the "
                "producer's clock and time unit")
