"""The ingest benchmark's measuring window (bench/ingest_throughput.py `_rate`)."""

from __future__ import annotations

import pytest

from bench.ingest_throughput import _rate


def _sample(t: float, consumed: int, cpu: float) -> dict:
    return {"t": t, "consumed": consumed, "cpu": cpu, "explained": consumed // 10}


def test_the_window_starts_at_the_first_consumed_sample():
    samples = [_sample(0.0, 0, 1.0), _sample(0.1, 500, 1.2), _sample(0.3, 2500, 1.4), _sample(0.4, 3000, 1.5)]
    rate = _rate(samples, 3000)
    assert rate["seconds"] == pytest.approx(0.3) and rate["events_per_s"] == round(2500 / 0.3)
    assert rate["cpu_us_per_event"] == pytest.approx(0.3 / 2500 * 1e6, abs=0.01)


def test_a_run_read_in_one_batch_is_measured_from_the_sample_before_it():
    samples = [_sample(0.0, 0, 1.0), _sample(0.1, 0, 1.01), _sample(0.2, 3000, 1.11)]
    rate = _rate(samples, 3000)
    assert rate["events_per_s"] == round(3000 / 0.1) and rate["cpu_us_per_event"] == pytest.approx(0.1 / 3000 * 1e6, abs=0.01)


def test_a_run_over_before_the_first_sample_says_so():
    with pytest.raises(RuntimeError, match="too few to measure"):
        _rate([_sample(0.0, 3000, 1.0), _sample(0.1, 3000, 1.0)], 3000)
