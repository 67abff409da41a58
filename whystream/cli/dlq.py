"""`whystream dlq` and `whystream dlq replay`: the dead letters of `predictions.dlq`."""

from __future__ import annotations

import typer

from whystream.cli.common import console, parse_duration, settings_of

commands = typer.Typer(help="Dead letters: by reason (`whystream dlq`), and sent back (`whystream dlq replay`)",
                       invoke_without_command=True)


@commands.callback()
def dlq(ctx: typer.Context, since: str = typer.Option("", help="Only dead letters of the last 90s, 5m, 1h, 2d...")):
    """Dead letters in `predictions.dlq` by reason, with the newest reason of each."""
    if ctx.invoked_subcommand is not None:
        return
    import time

    from rich.table import Table

    from whystream.jobs.dlq import summary

    since_ms = int((time.time() - parse_duration(since)) * 1000) if since else None
    found = summary(settings_of(ctx), since_ms)
    if not found.counts:
        console.print("no dead letters")
        return
    table = Table("reason", "count", "newest reason", box=None)
    for code, count in found.counts.most_common():
        table.add_row(code, f"{count:,}", found.latest[code]["reason"][:160])
    console.print(table)


@commands.command("replay")
def dlq_replay(ctx: typer.Context, reason: str = typer.Option(..., help="Reason code to send back, e.g. UNKNOWN_VERSION"),
               since: str = typer.Option("", help="Only dead letters of the last 90s, 5m, 1h, 2d...")):
    """Send the original bytes of these dead letters back to `predictions` (each one once, however often run)."""
    import time

    from whystream.kafka.redrive import replay

    since_ms = int((time.time() - parse_duration(since)) * 1000) if since else None
    report = replay(settings_of(ctx), reason.strip().upper(), since_ms)
    console.print(f"sent back {report.sent:,}; {report.already:,} sent back before; "
                  f"{report.truncated:,} truncated (too large for the DLQ: not sent)")
