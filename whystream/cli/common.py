"""What every command module of the CLI shares: the console, the settings the app's
callback loaded, progress bars and the parsers of durations and feature lists."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from whystream.config import Settings
from whystream.errors import WhystreamError

# Piped or logged, a line stays one line (a terminal wraps it at its own width).
console = Console(soft_wrap=not sys.stdout.isatty())


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.obj


def connections(
    ctx: typer.Context,
    broker: Optional[str] = typer.Option(None, help="Kafka bootstrap servers [WHYSTREAM_BROKER]"),
    redis_url: Optional[str] = typer.Option(None, help="Redis URL without a password [WHYSTREAM_REDIS_URL]"),
    clickhouse_dsn: Optional[str] = typer.Option(None, help="chdb:///path or http://host:8123, without a password "
                                                 "[WHYSTREAM_CLICKHOUSE_DSN]"),
    topic_prefix: Optional[str] = typer.Option(None, help="Prefix for every topic name [WHYSTREAM_TOPIC_PREFIX]"),
    registry: Optional[Path] = typer.Option(None, help="Model registry directory [WHYSTREAM_REGISTRY]"),
    home: Optional[Path] = typer.Option(None, help="Working directory for the embedded stack [WHYSTREAM_HOME, ./var]"),
):
    ctx.obj = Settings.load(broker=broker, redis_url=redis_url, clickhouse_dsn=clickhouse_dsn,
                            topic_prefix=topic_prefix, registry=registry, home=home)


def progress_bar(target: Console | None = None, disable: bool = False) -> Progress:
    """A progress bar on `target` (default: stdout's console)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=target or console,
                    transient=False, disable=disable)


def with_rate(progress: Progress, task, began: float):
    """A progress callback that also shows events per second."""
    def advance(n: int) -> None:
        progress.advance(task, n)
        done = progress.tasks[task].completed
        progress.update(task, rate=f"{done / max(time.monotonic() - began, 1e-9):,.0f}/s")
    return advance


def model_name(given: str | None, known: list[str], where: str) -> str:
    """The model a command works on: `given` if `where` knows it; without one, the only
    model `where` knows. Anything else is a one-line error (never a default name)."""
    if given is not None:
        if given not in known:
            raise WhystreamError(f"no model {given!r} in {where}; "
                                 + (f"known: {', '.join(known)}" if known else "it holds none"))
        return given
    if len(known) == 1:
        return known[0]
    if not known:
        raise WhystreamError(f"no model in {where}; `whystream register` adds one (`whystream train` the demo model)")
    raise WhystreamError(f"--model is required: {where} holds {', '.join(known)}")


def registered_model(settings: Settings, given: str | None) -> str:
    """model_name() against the model registry."""
    from whystream.models.registry import ModelRegistry

    return model_name(given, ModelRegistry(settings.registry).models(), f"registry {settings.registry}")


def parse_features(text: str) -> frozenset[str]:
    return frozenset(f.strip() for f in text.split(",") if f.strip())


def parse_duration(text: str) -> int:
    """Seconds in "90", "90s", "5m", "1h" or "2d"."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise WhystreamError(f"invalid duration {text!r}; use e.g. 300s, 5m, 1h or 2d")
    return int(float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)])
