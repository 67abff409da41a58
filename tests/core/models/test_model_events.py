"""ModelBook (whystream/models/events.py) and the registry's champion / challenger, without a broker."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.chdb import tiny_registered_model
from whystream.errors import WhystreamError
from whystream.models.events import CHALLENGER, CHAMPION, ModelBook, event_key
from whystream.models.registry import ModelRegistry


def event(version: str, role: str, promoted: bool = False) -> dict:
    return {"name": "m", "version": version, "role": role, "promoted": promoted}


def test_roles_follow_registration_challenge_and_promotion():
    book = ModelBook()
    for e in (event("v1", CHAMPION), event("v2", CHALLENGER)):
        book.apply(e)
    assert book.challenger_of("m", "v1") == "v2"
    assert book.challenger_of("m", "v2") is None and book.challenger_of("other", "v1") is None
    book.apply(event("v2", CHAMPION, promoted=True))
    assert book.roles["m"].champion == "v2" and book.challenger_of("m", "v2") is None


@st.composite
def histories(draw):
    """Event sequences the commands can write: a challenger is never the champion of the moment."""
    events, champion = [], None
    for _ in range(draw(st.integers(1, 30))):
        version, role = draw(st.sampled_from(["v1", "v2", "v3", "v4"])), draw(st.sampled_from([CHAMPION, CHALLENGER]))
        if role == CHALLENGER and version == champion:
            continue
        champion = version if role == CHAMPION else champion
        events.append(event(version, role, promoted=draw(st.booleans())))
    return events


@given(histories())
def test_replaying_the_compacted_topic_gives_the_roles_of_the_whole_topic(events):
    whole, compacted = ModelBook(), ModelBook()
    for e in events:
        whole.apply(e)
    last = {event_key(e): i for i, e in enumerate(events)}  # compaction keeps the last event per key
    for i, e in enumerate(events):
        if last[event_key(e)] == i:
            compacted.apply(e)
    assert whole.roles == compacted.roles


def test_the_registry_keeps_the_champion_and_its_challenger(tmp_path):
    champion = tiny_registered_model(tmp_path, seed=3)
    registry = ModelRegistry(tmp_path)
    challenger = registry.register("tiny", champion.booster, 0.4, champion.reference_shap[:1000] * 0 + 1,
                                   challenger=True)
    assert challenger.version != champion.version
    assert registry.latest("tiny") == champion.version and registry.challenger("tiny") == challenger.version
    with pytest.raises(WhystreamError, match="champion already"):
        registry.register("tiny", champion.booster, 0.5, champion.reference_shap[:1000] * 0 + 1, challenger=True)
    with pytest.raises(WhystreamError, match="no champion"):
        registry.register("nobody", champion.booster, 0.5, champion.reference_shap[:1000], challenger=True)
    registry.promote("tiny", challenger.version)
    assert registry.latest("tiny") == challenger.version and registry.challenger("tiny") is None
