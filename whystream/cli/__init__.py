"""The `whystream` command line: one Typer app composed of the command modules beside
this one, each a concern (the stream, the model lifecycle, ClickHouse, the console and report, dead
letters);
only this package composes the parts of whystream, none of them imports it.

Connection flags (before the command) override WHYSTREAM_* variables, which
override the connection file of a running `whystream up`. Errors a user can
cause end in one line naming the setting, never a traceback.
"""

from __future__ import annotations

import os
import sys

import typer

from whystream.cli import clickhouse, common, console, dlq, models, stream
from whystream.config import mask_secrets
from whystream.errors import WhystreamError
from whystream.logsafe import mask_secrets_in_logs

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Explain a live stream of model decisions.")
app.callback()(common.connections)
# In `whystream --help` in this order: the stream, the model lifecycle, ClickHouse, the console, dead letters.
for commands in (stream.commands, models.commands, clickhouse.commands, console.commands):
    app.add_typer(commands)
app.add_typer(dlq.commands, name="dlq")


def main() -> None:
    mask_secrets_in_logs()
    try:
        app()
    except WhystreamError as exc:
        print(f"whystream: error: {mask_secrets(exc)}", file=sys.stderr)  # one line, never wrapped
        if getattr(exc, "leaves_work_running", False):  # e.g. a query past its deadline in chDB, in this process
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(2)  # ends it with the process, instead of waiting for it at exit
        sys.exit(2)
