"""Properties of the reservoirs under any cut of the stream into batches, any
wall-clock pacing, decisions sent twice and events far ahead: the inclusion
weights of the closed windows add up to the number of distinct decisions, no
decision is selected twice, and no window stays open past max_open_ms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whystream.streams.sampling.config import SamplingConfig
from whystream.streams.sampling.reservoirs import OTHER, Reservoirs

T0 = 1_700_000_000_000


@st.composite
def streams(draw):
    n = draw(st.integers(1, 300))
    events = []  # (prediction_id, event_time, stratum)
    t = T0
    for i in range(n):
        t += draw(st.integers(0, 800))
        ahead = draw(st.sampled_from([0] * 20 + [240_000]))  # now and then an event minutes ahead
        events.append((f"p{i}", t + ahead, f"s{draw(st.integers(0, 6))}"))
        if draw(st.integers(0, 9)) == 0:  # sent again right away (same decision, next offset)
            events.append(events[-1])
    cuts = sorted(draw(st.lists(st.integers(1, max(len(events) - 1, 1)), max_size=8, unique=True)))
    pauses = draw(st.lists(st.integers(0, 6_000), min_size=len(cuts) + 1, max_size=len(cuts) + 1))
    return events, cuts, pauses


@settings(max_examples=150, deadline=None)
@given(streams(), st.integers(1, 6), st.integers(1, 4))
def test_weights_add_up_to_distinct_decisions_whatever_happens(stream, budget, max_strata):
    events, cuts, pauses = stream
    config = SamplingConfig(budget=budget, window_ms=2_000, idle_close_ms=3_000, max_open_ms=4_000,
                            max_strata=max_strata)
    res = Reservoirs(config)
    now, closed = 0, []
    bounds = [0, *cuts, len(events)]
    for (begin, end), pause in zip(zip(bounds[:-1], bounds[1:]), pauses):
        part = events[begin:end]
        if not part:
            continue
        now += pause
        res.add(0, np.arange(begin, end), res.hashes([e[0] for e in part]), ["v1"] * len(part), [e[2] for e in part],
                np.array([e[1] for e in part]), [e[0] for e in part], now)
        closed += res.close_due(now)
        # Nothing held open longer than max_open_ms (checked at the next close_due call), and
        # at most max_strata strata (plus the pool) per window.
        for state in res._partitions.values():
            assert all(now - r.opened_ms < config.max_open_ms for r in state.windows.values())
            for start in {key[2] for key in state.windows}:
                strata = {key[1] for key in state.windows if key[2] == start}
                assert len(strata - {OTHER}) <= max_strata
    closed += res.close_due(now + config.idle_close_ms)
    assert res.open_windows() == 0
    selected = [item for window in closed for item, _ in window.selected]
    assert len(selected) == len(set(selected)), "a decision selected twice"
    assert sum(w for window in closed for _, w in window.selected) == pytest.approx(sum(window.n for window in closed))
    assert sum(window.n for window in closed) == len({e[0] for e in events})
