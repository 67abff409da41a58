"""Schema Registry auth and TLS: WHYSTREAM_SCHEMA_REGISTRY_* reach confluent-kafka's
SchemaRegistryClient. The registry here is a few endpoints of the Schema Registry
REST API on a stdlib HTTP server (our own stand-in: no registry server installs
from the package registries), behind the real TLS terminator of tls_support, with
basic auth; subjects follow the TopicNameStrategy (`<topic>-value`)."""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from support.tls import TlsProxy, make_certs
from whystream.config import Settings
from whystream.errors import ConfigError
from whystream.wire.codecs import ConfluentCodec, topic_codec
from whystream.wire.schema_registry import registry_config

USER, PASSWORD = "whystream", "registry-Pa55"


class Registry:
    """POST /subjects/S/versions registers, GET /schemas/ids/N reads; 401 without the right basic auth."""

    def __init__(self):
        self.subjects: dict[str, int] = {}
        self.schemas: dict[int, str] = {}
        self.refused = 0
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def _authorised(self) -> bool:
                expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") == expected:
                    return True
                registry.refused += 1
                self._send(401, {"error_code": 40101, "message": "Unauthorized"})
                return False

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802
                if not self._authorised():
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                subject = re.match(r"/subjects/([^/]+)/versions", self.path).group(1)
                schema_id = registry.subjects.setdefault(subject, len(registry.subjects) + 1)
                registry.schemas[schema_id] = body["schema"]
                self._send(200, {"id": schema_id})

            def do_GET(self):  # noqa: N802
                if not self._authorised():
                    return
                m = re.match(r"/schemas/ids/(\d+)", self.path)
                if not m or int(m.group(1)) not in registry.schemas:
                    return self._send(404, {"error_code": 40403, "message": "Schema not found"})
                self._send(200, {"schema": registry.schemas[int(m.group(1))]})

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def registry(tmp_path):
    certs = make_certs(tmp_path / "certs")
    server = Registry()
    proxy = TlsProxy(certs, upstream=server.port).start()
    yield server, f"https://127.0.0.1:{proxy.port}", certs
    proxy.stop()
    server.httpd.shutdown()


def record():
    return {"prediction_id": "p1", "model_name": "fraud", "model_version": "v1", "event_time": 1_767_225_600_000,
            "features": {"amount": 12.5, "hour": None}, "score": 0.7, "decision": "decline", "threshold": 0.5,
            "segment": {"channel": "web"}, "priority": False}


def predictions_codec(url: str, prefix: str):
    """The codec of `predictions` as a command would make it: the variables read by Settings.load."""
    return topic_codec(Settings.load(schema_registry_url=url, topic_prefix=prefix), "predictions")


@pytest.mark.integration  # a real registry server behind a real TLS terminator
def test_basic_auth_and_ca_reach_the_registry_client(registry, monkeypatch):
    server, url, certs = registry
    monkeypatch.setenv("WHYSTREAM_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", f"{USER}:{PASSWORD}")
    monkeypatch.setenv("WHYSTREAM_SCHEMA_REGISTRY_SSL_CA_LOCATION", str(certs.ca))
    codec = predictions_codec(url, "t1.")
    assert isinstance(codec, ConfluentCodec)
    data = codec.encode(record())
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") == 1  # Confluent wire format, schema id 1
    assert list(server.subjects) == ["t1.predictions-value"]  # TopicNameStrategy
    decoded = predictions_codec(url, "t1.").decode(data)
    assert decoded["prediction_id"] == "p1" and decoded["features"] == {"amount": 12.5, "hour": None}
    assert server.refused == 0


@pytest.mark.integration
def test_wrong_password_or_ca_fails(registry, monkeypatch):
    server, url, certs = registry
    monkeypatch.setenv("WHYSTREAM_SCHEMA_REGISTRY_SSL_CA_LOCATION", str(certs.ca))
    monkeypatch.setenv("WHYSTREAM_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", f"{USER}:wrong")
    with pytest.raises(Exception, match="(?i)unauthori"):
        predictions_codec(url, "t2.").encode(record())
    assert server.refused >= 1
    monkeypatch.setenv("WHYSTREAM_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", f"{USER}:{PASSWORD}")
    monkeypatch.setenv("WHYSTREAM_SCHEMA_REGISTRY_SSL_CA_LOCATION", str(certs.other_ca))
    with pytest.raises(Exception, match="(?i)certificate"):
        predictions_codec(url, "t3.").encode(record())
    assert not server.subjects


def test_settings_map_to_client_properties_and_a_rejected_one_is_named(monkeypatch):
    conf, origins = registry_config("https://r:8081", {"WHYSTREAM_SCHEMA_REGISTRY_URL": "ignored",
                                                        "WHYSTREAM_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "u:p",
                                                        "WHYSTREAM_SCHEMA_REGISTRY_SSL_CA_LOCATION": "/ca.pem"})
    assert conf == {"url": "https://r:8081", "basic.auth.user.info": "u:p", "ssl.ca.location": "/ca.pem"}
    assert origins["basic.auth.user.info"] == "WHYSTREAM_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"
    monkeypatch.setenv("WHYSTREAM_SCHEMA_REGISTRY_NO_SUCH_THING", "1")
    with pytest.raises(ConfigError) as error:
        predictions_codec("https://127.0.0.1:1", "t.")
    assert error.value.setting == "WHYSTREAM_SCHEMA_REGISTRY_NO_SUCH_THING"
