"""`whystream dlq` and `whystream dlq replay` on the real embedded stack: dead
letters by reason, and their originals sent back to `predictions` once,
however often the replay runs."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter

from typer.testing import CliRunner

from support.events import make_records, message
from whystream.cli import app
from whystream.jobs.dlq import listing
from whystream.kafka.messages import RawMessage
from whystream.kafka.reader import read_all
from whystream.kafka.redrive import replay
from whystream.streams.assembly import build_engine
from whystream.streams.engine import EngineConfig
from whystream.streams.sampling.config import SamplingConfig


def cli(settings, *args):
    result = CliRunner().invoke(app, list(args), env={**settings.as_env(), "COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_dead_letters_of_a_model_not_registered_yet_are_sent_back_once(engine_settings, small_model, tmp_path):
    early = engine_settings.with_(registry=tmp_path / "empty-registry")
    (tmp_path / "empty-registry").mkdir()
    records = make_records(small_model, 40, run_id="redrive")
    for r in records:
        r["decision"] = "decline"  # all priority: each one explained once it is valid
    engine = build_engine(early, EngineConfig(SamplingConfig(new_version_events=0)))
    engine.process([message(r, 0, i) for i, r in enumerate(records)] +
                   [RawMessage(b"\x00junk", None, "predictions", 0, 99)])
    engine.close()

    assert Counter(letter["reason_code"] for letter in listing(engine_settings)) == {"UNKNOWN_MODEL": 40,
                                                                                   "UNDECODABLE": 1}
    shown = cli(engine_settings, "dlq")
    assert "40 UNKNOWN_MODEL, 1 UNDECODABLE" in shown and "…" not in shown
    listed = json.loads(cli(engine_settings, "dlq", "--format", "json"))
    assert sorted(letter["prediction_id"] for letter in listed if letter["reason_code"] == "UNKNOWN_MODEL") == \
        sorted(r["prediction_id"] for r in records)
    junk = next(letter for letter in listed if letter["reason_code"] == "UNDECODABLE")
    assert (junk["topic"], junk["partition"], junk["offset"], junk["prediction_id"]) == ("predictions", 0, 99, None)
    assert len({(letter["dlq_partition"], letter["dlq_offset"]) for letter in listed}) == 41
    assert all(letter["reason"] in shown for letter in listed)  # full reasons, in the table too
    assert len(list(csv.DictReader(io.StringIO(cli(engine_settings, "dlq", "--format", "csv",
                                                   "--reason", "undecodable"))))) == 1
    refused = CliRunner().invoke(app, ["dlq", "--reason", "nosuch"], env=engine_settings.as_env())
    assert refused.exit_code != 0 and "no dead-letter reason 'nosuch'" in str(refused.exception)

    # The model is registered now (engine_settings has it): send them back, twice.
    assert "sent back 40" in cli(engine_settings, "dlq", "replay", "--reason", "unknown_model", "--since", "1h")
    again = replay(engine_settings, "UNKNOWN_MODEL")
    assert (again.sent, again.already) == (0, 40)
    resent = read_all(engine_settings, engine_settings.topic("predictions"), "PredictionEvent")
    assert sorted(r["prediction_id"] for r in resent) == sorted(r["prediction_id"] for r in records)

    engine = build_engine(engine_settings, EngineConfig(SamplingConfig(new_version_events=0)))
    engine.process([message(r, 0, i) for i, r in enumerate(resent)])
    engine.close()
    explained = [e["prediction_id"] for e in read_all(engine_settings, engine_settings.topic("explanations"),
                                                       "ExplanationEvent")]
    assert sorted(explained) == sorted(r["prediction_id"] for r in records)
