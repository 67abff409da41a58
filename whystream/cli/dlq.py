"""`whystream dlq` and `whystream dlq replay`: the dead letters of `predictions.dlq`."""

from __future__ import annotations

import time
from collections import Counter

import typer

from whystream.cli.common import console, parse_duration, settings_of
from whystream.cli.output import Format, cell, emit, format_option, print_line, readable_time, utc_ms
from whystream.errors import WhystreamError

commands = typer.Typer(help="Dead letters: listed with their reasons (`whystream dlq`), and sent back (`whystream dlq replay`)",
                       invoke_without_command=True)


@commands.callback()
def dlq(ctx: typer.Context, since: str = typer.Option("", help="Only dead letters of the last 90s, 5m, 1h, 2d..."),
        reason: str = typer.Option("", help="Only dead letters with this reason code, e.g. UNKNOWN_VERSION"),
        limit: int = typer.Option(100, help="Newest dead letters a table shows (0: all); csv and json list all"),
        fmt: Format = format_option()):
    """The dead letters in `predictions.dlq`, one a row: where each lies there, the decision's
    id, where its original lay in `predictions`, when it failed and the full reason; then the
    count by reason."""
    if ctx.invoked_subcommand is not None:
        return
    from whystream.jobs.dlq import listing

    found = [{**letter, "failed_at": utc_ms(letter["failed_at_ms"])}
             for letter in listing(settings_of(ctx), _since_ms(since), _reason(reason))]
    if fmt != Format.table:
        emit(found, fmt)
        return
    if not found:
        print_line("no dead letters" + (f" with reason {_reason(reason)}" if reason else ""))
        return
    shown = found[-limit:] if limit > 0 else found
    emit(shown, fmt, ["dlq_partition", "dlq_offset", "failed_at", "reason_code", "prediction_id", "original at",
                      "reason"], cells=_cell, right=("dlq_partition", "dlq_offset"), spaced=True)
    if len(shown) < len(found):
        print_line(f"{len(found) - len(shown):,} older dead letters not shown (--limit 0 shows all)")
    counts = Counter(letter["reason_code"] for letter in found)
    print_line(f"{len(found):,} dead letters: " + ", ".join(f"{n:,} {code}" for code, n in counts.most_common()))


def _cell(letter: dict, column: str) -> str:
    if column == "failed_at":
        return readable_time(letter["failed_at_ms"])
    if column == "original at":
        return f"{letter['topic']} {letter['partition']}:{letter['offset']}"
    return cell(letter[column])


def _since_ms(since: str) -> int | None:
    return int((time.time() - parse_duration(since)) * 1000) if since else None


def _reason(text: str) -> str | None:
    """The reason code in `text` (any case), checked against DeadLetter.avsc's codes."""
    from whystream.jobs.dlq import reason_codes

    code = text.strip().upper()
    if code and code not in reason_codes():
        raise WhystreamError(f"no dead-letter reason {text.strip()!r}; reasons are {', '.join(reason_codes())}")
    return code or None


@commands.command("replay")
def dlq_replay(ctx: typer.Context, reason: str = typer.Option(..., help="Reason code to send back, e.g. UNKNOWN_VERSION"),
               since: str = typer.Option("", help="Only dead letters of the last 90s, 5m, 1h, 2d...")):
    """Send the original bytes of these dead letters back to `predictions` (each one once, however often run)."""
    from whystream.kafka.redrive import replay

    report = replay(settings_of(ctx), _reason(reason), _since_ms(since))
    console.print(f"sent back {report.sent:,}; {report.already:,} sent back before; "
                  f"{report.truncated:,} truncated (too large for the DLQ: not sent)")
