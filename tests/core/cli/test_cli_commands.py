"""The CLI commands against the real embedded stack: `whystream sql` in each --format (and
a trailing FORMAT clause), and the commands that must fail loudly on a model or a
decision they do not know (one line, a non-zero exit, never a default model)."""

from __future__ import annotations

import csv
import io
import json
import shutil

from typer.testing import CliRunner

from whystream.cli import app
from whystream.errors import WhystreamError

WIDE = "acme-merchant-" * 12  # 168 characters: wider than the 80 columns of a pipe


def run(*args, env=None):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "80", **(env or {})})


def one_line_error(result) -> str:
    """The one line main() prints for the WhystreamError a command raised."""
    assert result.exit_code != 0 and isinstance(result.exception, WhystreamError), result.output
    line = str(result.exception)
    assert "\n" not in line
    return line


def test_sql_prints_tables_csv_and_json_whole(stack, db, tmp_path):
    _, database = db
    flags = ["--home", str(tmp_path), "--clickhouse-dsn", stack.clickhouse_dsn, "sql", "--database", database]
    query = (f"SELECT number AS n, '{WIDE}' AS merchant, toDateTime64(1796603078.576, 3, 'UTC') AS at, "
             "[number, nan] AS pair FROM numbers(3)")

    table = run(*flags, query)
    assert table.exit_code == 0, table.output
    assert "…" not in table.stdout and "\x1b" not in table.stdout
    assert sum(WIDE in line for line in table.stdout.splitlines()) == 3  # each row one line, each cell whole

    rows = json.loads(run(*flags, "--format", "json", query).stdout)
    assert [r["n"] for r in rows] == [0, 1, 2] and rows[0]["merchant"] == WIDE
    assert rows[0]["at"].startswith("2026-12-07T00:24:38.576") and rows[1]["pair"] == [1, None]  # NaN: null

    as_csv = run(*flags, query + " FORMAT CSVWithNames")  # ClickHouse's clause, answered as --format csv
    assert as_csv.exit_code == 0 and "--format csv" in as_csv.stderr
    assert [r["merchant"] for r in csv.DictReader(io.StringIO(as_csv.stdout))] == [WIDE] * 3
    assert "Parquet" in one_line_error(run(*flags, "SELECT 1 FORMAT Parquet"))


def test_commands_refuse_a_model_they_do_not_know(stack, db, small_model, tmp_path):
    _, database = db
    ch = ["--home", str(tmp_path), "--clickhouse-dsn", stack.clickhouse_dsn]
    assert "no model 'nosuch'" in one_line_error(run(*ch, "compare", "nosuch", "--database", database))
    assert "no model 'nosuch'" in one_line_error(run(*ch, "drift", "--model", "nosuch", "--database", database))
    assert "no model in ClickHouse" in one_line_error(run(*ch, "drift", "--database", database))  # none to infer

    registry = tmp_path / "registry"
    shutil.copytree(small_model.path.parent.parent, registry)
    flags = ["--home", str(tmp_path), "--registry", str(registry), "--broker", stack.broker]
    assert "no model 'nosuch' in registry" in one_line_error(run(*flags, "produce", "--model", "nosuch"))
    assert "has no version 'nosuch'" in one_line_error(run(*flags, "produce", "--version", "nosuch"))
    shutil.copytree(registry / small_model.name, registry / "credit")  # two models: no name is guessed
    line = one_line_error(run(*flags, "produce", "--count", "1"))
    assert line == f"--model is required: registry {registry} holds credit, fraud"


def test_explain_an_unknown_decision_is_an_error(engine_settings):
    line = one_line_error(run("explain", "no-such-decision", env=engine_settings.as_env()))
    assert line.startswith("no decision with prediction_id 'no-such-decision' within reach")
    assert "not in the decision store" in line
