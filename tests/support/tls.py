"""TLS for the tests: a CA and a server certificate for 127.0.0.1/localhost made
with `cryptography`, and a real TLS terminator (stdlib `ssl`, asyncio) that
forwards decrypted bytes to a plain TCP server (Tansu, redis-server). Tansu 0.6.0
does not serve TLS itself; this is what a TLS-terminating load balancer does."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from whystream.infra.stack import free_port


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA that signed the server certificate
    other_ca: Path  # a CA that signed nothing here: a client trusting only it must fail
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str, now):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_certs(folder: Path) -> Certs:
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, ca_cert = _ca("whystream test CA", now)
    _, other = _ca("some other CA", now)
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(san, critical=False).sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    certs = Certs(folder / "ca.pem", folder / "other-ca.pem", folder / "server.pem", folder / "server.key")
    certs.ca.write_bytes(ca_cert.public_bytes(pem))
    certs.other_ca.write_bytes(other.public_bytes(pem))
    certs.cert.write_bytes(cert.public_bytes(pem))
    certs.key.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    certs.key.chmod(0o600)
    return certs


class TlsProxy:
    """Accepts TLS on 127.0.0.1:port and forwards to 127.0.0.1:upstream, on a thread
    of its own. Counts completed handshakes and keeps the reason of each failed one:
    `plaintext` counts clients that spoke no TLS at all, `untrusting` those that
    refused the certificate (a client closing mid-handshake is neither)."""

    def __init__(self, certs: Certs, upstream: int, port: int | None = None):
        self.port = port or free_port()
        self.upstream = upstream
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(certs.cert, certs.key)
        self.handshakes = 0
        self.failures: list[str] = []  # the reason of each failed handshake
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tls-proxy-{self.port}", daemon=True)

    @property
    def plaintext(self) -> int:
        """Clients that sent something other than a TLS ClientHello (e.g. a Kafka request)."""
        return sum(r in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL") for r in self.failures)

    @property
    def untrusting(self) -> int:
        """Clients that refused the server's certificate (a TLS alert about it)."""
        return sum("UNKNOWN_CA" in r or "BAD_CERTIFICATE" in r or "CERTIFICATE_UNKNOWN" in r for r in self.failures)

    def start(self) -> "TlsProxy":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        async def cancel_connections():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_connections(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def wait_until(self, condition, timeout: float = 10.0) -> bool:
        """Whether `condition()` holds within `timeout` s: the terminator records a failed
        handshake on its own thread, a moment after the client has given up."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _client(self, reader, writer) -> None:
        try:
            await writer.start_tls(self.context)  # the handshake, server side
        except (ssl.SSLError, OSError, ConnectionError) as exc:
            self.failures.append(getattr(exc, "reason", None) or type(exc).__name__)
            writer.close()
            return
        self.handshakes += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader, writer) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError, ssl.SSLError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass
