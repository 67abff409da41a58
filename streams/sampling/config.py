"""The sampling settings of a worker (`whystream worker --budget --window ...`), checked once."""

from __future__ import annotations

from dataclasses import dataclass

from whystream.errors import ConfigError


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
    # Earlier time windows (generations) of a partition a copy of a decision is recognised in. A
    # commit stays at the oldest one's start: the more, the longer a replay after a crash.
    dedup_windows: int = 8
    forget_idle_ms: int = 300_000  # a partition without a candidate this long (wall clock) forgets them all
    known_decisions: frozenset[str] = frozenset({"approve"})  # labels that are neither adverse nor unknown

    def __post_init__(self):
        # Labels are compared case-folded (streams/labels.py): `DECLINE` is adverse too.
        object.__setattr__(self, "adverse_decisions", frozenset(d.casefold() for d in self.adverse_decisions))
        if self.max_open_ms < 1:
            raise ConfigError("sampling.max_open_ms", f"must be a positive number of ms, got {self.max_open_ms}")
        if self.forget_idle_ms < self.idle_close_ms:
            raise ConfigError("sampling.forget_idle_ms", f"must be at least idle_close_ms ({self.idle_close_ms}), "
                                                         f"got {self.forget_idle_ms}")
        if self.dedup_windows < 0:
            raise ConfigError("sampling.dedup_windows", f"must not be negative, got {self.dedup_windows}")
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
