"""Which minutes a view shows: "now" (histograms, drift tables, health) and the span of
the over-time charts, fitted to the data.

A model whose explanations cover twenty minutes of a 24-hour history gets a
twenty-minute time axis in one- or two-minute buckets, not 24 hours of empty axis with
one dot; a "now" window that holds nothing falls back to the last window of data, and
the page says so.

>>> nice_bucket(20 * 60, 30), nice_bucket(24 * 3600, 30), nice_bucket(90 * 60, 12)
(60, 3600, 600)
"""

from __future__ import annotations

from dataclasses import dataclass

from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE
from whystream.jobs.console.queries import data_extent

BUCKETS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_POINTS = 30  # points of a line over time
MAX_DRIFT_POINTS = 12  # PSI over time: one drift query per point


def nice_bucket(span_s: float, points: int) -> int:
    """The smallest round bucket (one minute up to a day) that cuts `span_s` into at most `points`."""
    return next((b for b in BUCKETS if span_s / b <= points), BUCKETS[-1])


@dataclass(frozen=True)
class Period:
    start_ms: int  # "now": [start_ms, end_ms)
    end_ms: int
    history_start_ms: int  # over-time charts: [history_start_ms, history_end_ms)
    history_end_ms: int
    bucket_s: int
    drift_bucket_s: int
    note: str = ""  # said on the page when "now" is not the last window before end

    @property
    def window_minutes(self) -> int:
        return (self.end_ms - self.start_ms) // 60_000

    def drift_buckets(self) -> list[tuple[int, int]]:
        """[start, end) in epoch ms of each PSI-over-time point."""
        step = self.drift_bucket_s * 1000
        first = self.history_start_ms // step * step
        return [(t, t + step) for t in range(first, self.history_end_ms, step)]


def fit(client, model: str, now_ms: int, window_s: int, history_s: int,
        database: str = DEFAULT_DATABASE) -> Period:
    """The period of a view of `model` ending at `now_ms`, fitted to where its data lies."""
    end = int(now_ms)
    extent = data_extent(client, model, end - history_s * 1000, end + 60_000, database)
    if extent is None:
        span = history_s
        return Period(end - window_s * 1000, end, end - history_s * 1000, end, nice_bucket(span, MAX_POINTS),
                      nice_bucket(span, MAX_DRIFT_POINTS))
    first, last = extent
    start, note = end - window_s * 1000, ""
    if last <= start:  # nothing in "now": the last window of data stands in
        end, start = last, last - window_s * 1000
        note = (f"No explanations in the last {window_s // 60} minutes; \"now\" is the last {window_s // 60} "
                "minutes with data.")
    history_end = min(max(last, end), int(now_ms) + 60_000)
    span = max(history_end - first, 60_000) / 1000
    bucket = nice_bucket(span, MAX_POINTS)
    history_start = first // (bucket * 1000) * bucket * 1000
    return Period(start, end, history_start, history_end, bucket, nice_bucket(span, MAX_DRIFT_POINTS), note)
