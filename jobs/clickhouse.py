"""ClickHouse for whystream: connecting, the versioned DDL, model references,
and read-only queries through a running sink.

- `connect(settings, database)` gives a clickhouse-connect client for a
  `chdb:///path` DSN (the ClickHouse engine in this process) or an
  `http(s)://host:8123` one, with the database created. A malformed DSN or a
  server that does not answer ends as ConfigError naming WHYSTREAM_CLICKHOUSE_DSN.
- `migrate(client, database)` applies `schemas/clickhouse/NNN_*.sql` in order
  and records each version in `schema_migrations`; re-running applies nothing.
- `register_reference(client, model)` stores a model version's bins, reference
  histogram, mean |SHAP| and quantiles in `model_reference` (once per version).
- A chDB directory is open in one process only. While `whystream sink` runs it
  owns the directory and serves read-only queries on a loopback port written to
  `<home>/sink.port` (`query_port`; what may run there: `sql_guard`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

import numpy as np

from whystream.config import ENV, Settings, mask_secrets
from whystream.errors import ConfigError, WhystreamError
from whystream.jobs.clickhouse_cluster import (CLUSTER_INSERT_SETTINGS, cluster_statement, create_database,
                                               schema_migrations_ddl)

log = logging.getLogger("whystream.clickhouse")

DEFAULT_DATABASE = "whystream"
DSN_VAR = ENV["clickhouse_dsn"]
PORT_FILE = "sink.port"
# Levels of the reference quantiles stored per feature; the same 20 midpoints are
# written out in the feature_drift view (schemas/clickhouse/007_drift_views.sql).
QUANTILE_LEVELS = tuple(round((i + 0.5) / 20, 3) for i in range(20))
# The 100 midpoints of reference_quantiles_100 (Wasserstein-1 since migration 020; the 20
# above are among them: level (i + 0.5) / 20 is number 5i + 2).
QUANTILE_LEVELS_100 = tuple(round((i + 0.5) / 100, 4) for i in range(100))
# Settings for every insert into `explanations`: the deduplication token must
# also deduplicate the blocks the materialized views write (see docs).
DEDUP_SETTINGS = {"deduplicate_blocks_in_dependent_materialized_views": 1}

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ---------------------------------------------------------------- SQL literals

def ident(name: str) -> str:
    """A database or table name, checked (they are spliced into DDL)."""
    if not _IDENTIFIER.match(name):
        raise WhystreamError(f"invalid ClickHouse identifier {name!r}: letters, digits and _ only")
    return name


def lit(value: Any) -> str:
    """A Python value as a ClickHouse SQL literal."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(lit(v) for v in value) + "]"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def ms_lit(ms: int) -> str:
    """Epoch milliseconds as a DateTime64(3, 'UTC') expression."""
    return f"fromUnixTimestamp64Milli({int(ms)}, 'UTC')"


def rows(client, sql: str, **settings) -> list[dict]:
    """Run a query and return its rows as dicts (works for every client here)."""
    result = client.query(sql, settings=settings) if settings else client.query(sql)
    names = list(result.column_names)
    return [dict(zip(names, row)) for row in result.result_rows]


# ---------------------------------------------------------------- connecting

@dataclass(frozen=True)
class Dsn:
    kind: str  # "chdb" or "http"
    path: Path | None  # chDB directory; None for chdb://memory
    url: str  # the DSN as given (http) or normalised (chdb)

    @property
    def redacted(self) -> str:
        return mask_secrets(self.url)


def parse_dsn(dsn: str) -> Dsn:
    """Check a WHYSTREAM_CLICKHOUSE_DSN value: chdb:///path, chdb://memory or http(s)://host:port."""
    text = (dsn or "").strip()
    try:
        parts = urlparse(text)
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise ConfigError(DSN_VAR, f"cannot parse {mask_secrets(text)!r} ({exc}); expected chdb:///path or http://host:8123") from None
    if parts.scheme == "chdb":
        rest = text[len("chdb://"):].split("?", 1)[0]
        if rest in ("memory", ":memory:"):
            return Dsn("chdb", None, "chdb://memory")
        if not rest:
            raise ConfigError(DSN_VAR, f"{text!r} names no chDB directory; expected chdb:///absolute/path")
        path = Path(rest).expanduser().resolve()
        return Dsn("chdb", path, f"chdb://{path}")
    if parts.scheme in ("http", "https") and parts.hostname:
        return Dsn("http", None, text)
    raise ConfigError(DSN_VAR, f"unsupported DSN {mask_secrets(text)!r}; expected chdb:///path (embedded) or "
                               "http(s)://[user:password@]host:8123 (a ClickHouse server)")


def _held_elsewhere(exc: Exception) -> bool:
    return "Error initializing EmbeddedServer" in str(exc)


def _open_client(dsn: Dsn, database: str | None, settings: dict | None = None):
    import clickhouse_connect

    if dsn.kind == "chdb":
        if dsn.path is not None:
            dsn.path.mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(interface="chdb", path=str(dsn.path) if dsn.path else ":memory:",
                                             database=database)
    return clickhouse_connect.get_client(dsn=dsn.url, database=database, connect_timeout=5,
                                         send_receive_timeout=60, settings=settings or {})


def connect(settings: Settings, database: str = DEFAULT_DATABASE, migrate_schema: bool = True):
    """A clickhouse-connect client on `database` (created if missing), with the
    schema migrated. Raises ConfigError naming WHYSTREAM_CLICKHOUSE_DSN when the
    DSN is malformed or ClickHouse cannot be reached. With migrate_schema=False
    (readers: `sql`, `drift`, `report`) nothing is written, not even the database:
    read-only credentials suffice; a missing database gives a client without one."""
    dsn = parse_dsn(settings.require("clickhouse_dsn"))
    ident(database)
    cluster = settings.clickhouse_cluster or None
    try:
        bootstrap = _open_client(dsn, None)
        if migrate_schema:
            bootstrap.command(create_database(database, cluster))
        elif not rows(bootstrap, f"SELECT count() AS n FROM system.databases WHERE name = {lit(database)}")[0]["n"]:
            return bootstrap
        client = _open_client(dsn, database, CLUSTER_INSERT_SETTINGS if cluster else None)
        bootstrap.close()
    except WhystreamError:
        raise
    except Exception as exc:
        if _held_elsewhere(exc):
            raise ConfigError(DSN_VAR, held_message(settings, dsn)) from None
        raise ConfigError(DSN_VAR, f"cannot connect to ClickHouse at {dsn.redacted}: {one_line(exc)}") from None
    if migrate_schema:
        migrate(client, database, cluster)
    return client


def require_schema(client, database: str = DEFAULT_DATABASE) -> None:
    """A ConfigError unless `database` holds whystream's tables (readers never create them)."""
    found = rows(client, f"SELECT count() AS n FROM system.tables WHERE database = {lit(database)} "
                         f"AND name = 'schema_migrations'")
    if not found[0]["n"]:
        raise ConfigError(DSN_VAR, f"ClickHouse has no whystream tables in database {database!r} yet; "
                                   "`whystream sink` creates them when it starts (readers never write)")


def held_message(settings: Settings, dsn: Dsn) -> str:
    return (f"the chDB directory {dsn.path} is held by another process (`whystream sink` holds it while it runs), "
            f"and no running sink advertises a query port in {settings.home / PORT_FILE}: pass the sink's --home, "
            f"or stop the process that holds the directory")


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------- migrations

@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]


def migrations() -> list[Migration]:
    """The DDL files schemas/clickhouse/NNN_name.sql, in version order."""
    folder = resources.files("whystream.schemas").joinpath("clickhouse")
    found = []
    for entry in folder.iterdir():
        m = re.match(r"^(\d+)_(\w+)\.sql$", entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text()))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise WhystreamError(f"two ClickHouse migrations share a version number: {versions}")
    return found


def statements(sql: str) -> list[str]:
    """The statements of a DDL file: `--` comments dropped, split at `;` ending a line."""
    text = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*(?:\n|$)", text) if s.strip()]


def migration_statements(mig: Migration, database: str, cluster: str | None = None) -> list[str]:
    """The statements of a migration for `database`: the file's own, or their cluster
    form (jobs/clickhouse_cluster.py) when a cluster name is given."""
    own = statements(mig.sql.replace("{db}", ident(database)))
    return own if not cluster else [out for statement in own for out in cluster_statement(statement, cluster)]


def migrate(client, database: str = DEFAULT_DATABASE, cluster: str | None = None) -> list[int]:
    """Apply the migrations not yet recorded in `schema_migrations`; return their versions.

    Every statement is idempotent (`CREATE ... IF NOT EXISTS`, `ADD COLUMN IF NOT
    EXISTS`), so a migration interrupted half way is simply applied again. A
    changed file of an applied version is reported in the log, not re-applied:
    add a new version instead. With `cluster` (WHYSTREAM_CLICKHOUSE_CLUSTER) the
    statements are the cluster-aware ones: ON CLUSTER, Replicated, Distributed.
    """
    db = ident(database)
    client.command(schema_migrations_ddl(db, cluster))
    applied = {r["version"]: r["checksum"] for r in rows(
        client, f"SELECT version, any(checksum) AS checksum FROM {db}.schema_migrations GROUP BY version")}
    done = []
    for mig in migrations():
        if mig.version in applied:
            if applied[mig.version] != mig.checksum:
                log.warning("ClickHouse migration %03d_%s changed after it was applied to %s; "
                            "not re-applied (add a new migration instead)", mig.version, mig.name, db)
            continue
        for statement in migration_statements(mig, db, cluster):
            client.command(statement)
        client.insert("schema_migrations", [[mig.version], [mig.name], [mig.checksum]], database=db,
                      column_names=["version", "name", "checksum"], column_oriented=True)
        done.append(mig.version)
    if done:
        log.info("applied ClickHouse migrations %s to %s", done, db)
    return done


# ---------------------------------------------------------------- model reference

REFERENCE_COLUMNS = ["model_name", "model_version", "feature", "feature_index", "bin_edges", "reference_hist",
                     "reference_mean_abs_shap", "reference_mean_shap", "reference_mean_sq_shap", "quantile_levels",
                     "reference_quantiles", "reference_quantiles_100", "n_reference", "threshold"]


def reference_columns(model) -> list[list]:
    """model_reference rows of a RegisteredModel (or anything with its reference
    fields: name, version, feature_names, bin_edges, reference_hist,
    reference_shap, threshold), column-oriented."""
    shap = np.asarray(model.reference_shap, dtype=float)
    edges = np.asarray(model.bin_edges, dtype=float)
    hist = np.asarray(model.reference_hist, dtype=float)
    names = list(model.feature_names)
    if shap.ndim != 2 or shap.shape[1] != len(names) or edges.shape[0] != len(names) \
            or hist.shape != (len(names), edges.shape[1] - 1):
        raise WhystreamError(f"model {model.name} {model.version}: reference arrays do not match its "
                             f"{len(names)} features (shap {shap.shape}, edges {edges.shape}, hist {hist.shape})")
    quantiles = np.quantile(shap, QUANTILE_LEVELS, axis=0).T  # [F, L]
    quantiles_100 = np.quantile(shap, QUANTILE_LEVELS_100, axis=0).T  # [F, 100]
    f = len(names)
    return [
        [model.name] * f, [model.version] * f, names, list(range(f)),
        [list(map(float, e)) for e in edges], [list(map(float, h)) for h in hist],
        [float(v) for v in np.abs(shap).mean(axis=0)], [float(v) for v in shap.mean(axis=0)],
        [float(v) for v in np.square(shap).mean(axis=0)],
        [list(QUANTILE_LEVELS)] * f, [list(map(float, q)) for q in quantiles],
        [list(map(float, q)) for q in quantiles_100],
        [len(shap)] * f, [float(getattr(model, "threshold", float("nan")))] * f,
    ]


def has_reference(client, name: str, version: str, database: str = DEFAULT_DATABASE) -> bool:
    found = rows(client, f"SELECT count() AS c FROM {ident(database)}.model_reference "
                         f"WHERE model_name = {lit(name)} AND model_version = {lit(version)}")
    return found[0]["c"] > 0


def register_reference(client, model, database: str = DEFAULT_DATABASE, backfill: bool = True) -> bool:
    """Store `model`'s reference in model_reference unless its version is there
    already; True when it was added.

    Explanations of the version inserted before its reference existed got no
    histogram rows (the histogram view bins on the reference); with `backfill`
    they are binned now, so the histograms cover them exactly once.
    """
    db = ident(database)
    from whystream.jobs.input_reference import register_input_reference  # imports this module

    register_input_reference(client, model, db, backfill)  # its own once-per-version check
    if has_reference(client, model.name, model.version, db):
        return False
    client.insert("model_reference", reference_columns(model), database=db,
                  column_names=REFERENCE_COLUMNS, column_oriented=True)
    if backfill:
        # Rows inserted before the reference: their inserted_at is earlier than its registered_at.
        client.command(f"""
            INSERT INTO {db}.attribution_hist (model_name, model_version, feature, minute, bin, weight, n)
            SELECT e.model_name, e.model_version, e.feature, e.minute,
                   toUInt16(arrayCount(edge -> edge <= e.shap, r.bin_edges) - 1) AS bin, sum(e.weight), count()
            FROM
            (
                SELECT model_name, model_version, toStartOfMinute(event_time) AS minute, inclusion_weight AS weight,
                       attributions.feature AS feature, attributions.shap AS shap
                FROM {db}.explanations FINAL
                ARRAY JOIN attributions
                WHERE model_name = {lit(model.name)} AND model_version = {lit(model.version)}
                  AND inserted_at < (SELECT min(registered_at) FROM {db}.model_reference
                                     WHERE model_name = {lit(model.name)} AND model_version = {lit(model.version)})
            ) AS e
            INNER JOIN
            (
                SELECT model_name, model_version, feature, bin_edges FROM {db}.model_reference FINAL
                WHERE model_name = {lit(model.name)} AND model_version = {lit(model.version)}
            ) AS r ON e.model_name = r.model_name AND e.model_version = r.model_version AND e.feature = r.feature
            GROUP BY e.model_name, e.model_version, e.feature, e.minute, bin
            SETTINGS insert_deduplication_token = {lit(f"backfill:{model.name}:{model.version}")}""")
    log.info("registered the SHAP reference of %s %s in %s.model_reference", model.name, model.version, db)
    return True


# ---------------------------------------------------------------- inserting explanations

EXPLANATION_COLUMNS = [
    "prediction_id", "model_name", "model_version", "explainer", "explainer_version", "event_time",
    "explained_at", "output_space", "base_value", "raw_score", "attributions.feature", "attributions.value",
    "attributions.shap", "top_reasons.feature", "top_reasons.value", "top_reasons.shap", "score", "decision",
    "threshold", "sampling_reason", "inclusion_weight", "stratum", "source", "redis_available", "latency_ms", "worker",
    "kafka_partition", "kafka_offset", "explained_class", "principal_reasons.code", "principal_reasons.text",
    "principal_reasons.feature", "principal_reasons.value", "principal_reasons.shap", "reason_codes_version",
    "redacted_features", "role", "champion_prediction_id", "request_id",
]


def explanation_columns(events: Iterable[dict], positions: Iterable[tuple[int, int]] | None = None) -> list[list]:
    """Decoded ExplanationEvent records as the columns of `explanations`
    (EXPLANATION_COLUMNS order); positions are (partition, offset) per event."""
    events = list(events)
    positions = list(positions) if positions is not None else [(-1, -1)] * len(events)
    cols: list[list] = [[] for _ in EXPLANATION_COLUMNS]
    (pid, name, version, explainer, explainer_v, event_time, explained_at, space, base, raw, a_feat, a_val, a_shap,
     r_feat, r_val, r_shap, score, decision, threshold, reason, weight, stratum, source, redis, latency, worker,
     part, off, klass, p_code, p_text, p_feat, p_val, p_shap, codes_version, redacted, role, champion, request) = cols
    for e, (p, o) in zip(events, positions):
        pid.append(e["prediction_id"])
        name.append(e["model_name"])
        version.append(e["model_version"])
        explainer.append(e["explainer"])
        explainer_v.append(e["explainer_version"])
        event_time.append(int(e["event_time"]))
        explained_at.append(int(e["explained_at"]))
        space.append(e.get("output_space", "raw_margin"))
        base.append(float(e["base_value"]))
        raw.append(float(e["raw_score"]))
        attrs = e["attributions"]
        a_feat.append([a["feature"] for a in attrs])
        a_val.append([a["value"] for a in attrs])
        a_shap.append([a["shap"] for a in attrs])
        reasons = e["top_reasons"]
        r_feat.append([a["feature"] for a in reasons])
        r_val.append([a["value"] for a in reasons])
        r_shap.append([a["shap"] for a in reasons])
        score.append(float(e["score"]))
        decision.append(e["decision"])
        threshold.append(float(e["threshold"]))
        reason.append(str(e["sampling_reason"]))
        weight.append(float(e["inclusion_weight"]))
        stratum.append(e["stratum"])
        source.append(str(e["source"]))
        redis.append(bool(e.get("redis_available", e.get("cached", True))))  # `cached` before v3
        latency.append(float(e["latency_ms"]))
        worker.append(e.get("worker", ""))
        redacted.append(list(e.get("redacted_features", ())))
        part.append(int(p))
        off.append(int(o))
        klass.append(e.get("explained_class"))
        principal = e.get("principal_reasons") or []
        p_code.append([a["code"] for a in principal])
        p_text.append([a["text"] for a in principal])
        p_feat.append([a["feature"] for a in principal])
        p_val.append([a["value"] for a in principal])
        p_shap.append([a["shap"] for a in principal])
        codes_version.append(e.get("reason_codes_version") or "")
        role.append(str(e.get("role", "CHAMPION")))
        champion.append(e.get("champion_prediction_id") or "")
        request.append(e.get("request_id") or "")
    return cols


def insert_explanations(client, events: list[dict], database: str = DEFAULT_DATABASE, token: str | None = None,
                        positions=None) -> None:
    """Insert decoded explanations with a deduplication token (random if none):
    the same token inserted twice writes once, in the table and in its views."""
    insert_columns(client, explanation_columns(events, positions), database, token)


def insert_columns(client, columns: list[list], database: str = DEFAULT_DATABASE, token: str | None = None) -> None:
    """Insert `explanations` columns (EXPLANATION_COLUMNS order), deduplicated by `token`."""
    client.insert("explanations", columns, database=ident(database),
                  column_names=EXPLANATION_COLUMNS, column_oriented=True,
                  settings={**DEDUP_SETTINGS, "insert_deduplication_token": token or uuid.uuid4().hex})
