"""The `models` topic: one ModelRegistered event per registered or promoted version.

`whystream register`, `train` and `promote` publish (`announce`); every worker
reads the whole topic at start and follows it (streams/control/plane.py), so it can
build a version's kernels before the version's first event, knows each
model's champion and challenger, and sends back a version's parked
UNKNOWN_VERSION dead letters.

Events are keyed `<name>/<version>`: the topic is compacted, so the last event
per version stays. `ModelBook` replays events in topic order into the current
roles: a CHAMPION event (registration or promotion) makes that version the
champion and ends the challenge; a CHALLENGER event names the challenger.
Replaying the compacted topic gives the same roles as replaying all of it: an
event compaction drops is followed by one of the same version, later.
"""

from __future__ import annotations

import getpass
import socket
import time
from dataclasses import dataclass, field

from whystream.config import Settings
from whystream.errors import WhystreamError
from whystream.kafka.clients import check_broker, producer
from whystream.models.registry import RegisteredModel
from whystream.wire.codecs import topic_codec

CHAMPION, CHALLENGER = "CHAMPION", "CHALLENGER"


def model_event(model: RegisteredModel, role: str = CHAMPION, promoted: bool = False) -> dict:
    return {"name": model.name, "version": model.version, "objective": model.kind.objective,
            "registry": str(model.path), "role": role, "challenger_of": model.name if role == CHALLENGER else None,
            "promoted": promoted, "registered_at": int(time.time() * 1000),
            "registered_by": f"{getpass.getuser()}@{socket.gethostname()}"}


def event_key(event: dict) -> bytes:
    return f"{event['name']}/{event['version']}".encode()


def announce(settings: Settings, event: dict, timeout: float = 15.0) -> None:
    """Publish one ModelRegistered event and wait for the broker to confirm it."""
    check_broker(settings.kafka_config, settings.require("broker"), timeout=5)  # ConfigError, at once, if none
    topic = settings.topic("models")
    codec = topic_codec(settings, "models")
    confirmed = producer(settings, "confirmed")
    failures: list = []
    confirmed.produce(topic, codec.encode(event), event_key(event),
                      on_delivery=lambda err, _: failures.append(err) if err is not None else None)
    if confirmed.flush(timeout) or failures:
        raise WhystreamError(f"{topic}: the broker did not confirm the event of {event['name']}@{event['version']} "
                             f"({failures[0] if failures else 'timed out'}); run the command again")


@dataclass
class Roles:
    champion: str | None = None
    challenger: str | None = None


@dataclass
class ModelBook:
    """Each model's champion and challenger, from ModelRegistered events in topic order."""

    roles: dict[str, Roles] = field(default_factory=dict)

    def apply(self, event: dict) -> None:
        roles = self.roles.setdefault(event["name"], Roles())
        if event["role"] == CHAMPION:  # a new or promoted champion ends the challenge
            roles.champion, roles.challenger = event["version"], None
        else:
            roles.challenger = event["version"] if event["version"] != roles.champion else None

    def challenger_of(self, name: str, version: str) -> str | None:
        """The challenger to shadow decisions of `name`@`version` with: only the champion's are shadowed."""
        roles = self.roles.get(name)
        if roles is None or roles.challenger is None or roles.champion != version:
            return None
        return roles.challenger
