-- A read-only ClickHouse user for whystream's analysts: `whystream sql`, `drift`,
-- `report`, `verify` and `compare` connect as it when WHYSTREAM_CLICKHOUSE_READER_DSN
-- names it (https://whystream_reader@host:8443, the password in the environment).
-- Run as an administrator (clickhouse-client --multiquery < clickhouse-analyst.sql),
-- after replacing the password hash and, if yours differs, the database `whystream`.
-- The database is the first line of defence on a server; whystream's guard
-- (jobs/clickhouse/guard.py) is the second. Every statement here is parsed by the
-- tests (tests/jobs/clickhouse/test_analyst_role.py); none was run on a server there.

-- Limits that the user cannot change: readonly = 1 forbids every SET and SETTINGS
-- clause, and CONST refuses them even where readonly would not.
CREATE SETTINGS PROFILE IF NOT EXISTS whystream_analyst SETTINGS
    readonly = 1 CONST,
    max_execution_time = 60 CONST,
    timeout_overflow_mode = 'throw' CONST,
    max_result_rows = 1000000 CONST,
    max_result_bytes = 268435456 CONST,
    result_overflow_mode = 'throw' CONST,
    max_memory_usage = 2147483648 CONST,
    allow_introspection_functions = 0 CONST,
    allow_ddl = 0 CONST,
    cancel_http_readonly_queries_on_client_close = 1 CONST;

CREATE ROLE IF NOT EXISTS whystream_analyst SETTINGS PROFILE 'whystream_analyst';

-- Reading whystream's tables and views, and the catalogue analysts look things up in.
GRANT SELECT ON whystream.* TO whystream_analyst;
GRANT SELECT ON system.tables TO whystream_analyst;
GRANT SELECT ON system.columns TO whystream_analyst;
GRANT SELECT ON system.parts TO whystream_analyst;
GRANT SELECT ON system.functions TO whystream_analyst;
GRANT SELECT ON system.aggregate_function_combinators TO whystream_analyst;

-- Nothing outside the database: no FILE, URL, REMOTE, S3 or other sources (table
-- functions and engines reading the host or the network), no dictionaries, no
-- introspection, no KILL of others' queries. Never granted; revoked to be explicit.
REVOKE SOURCES ON *.* FROM whystream_analyst;
REVOKE dictGet ON *.* FROM whystream_analyst;
REVOKE INTROSPECTION ON *.* FROM whystream_analyst;
REVOKE KILL QUERY ON *.* FROM whystream_analyst;

-- Replace the hash: echo -n 'the password' | sha256sum
CREATE USER IF NOT EXISTS whystream_reader
    IDENTIFIED WITH sha256_hash BY '0000000000000000000000000000000000000000000000000000000000000000'
    DEFAULT ROLE whystream_analyst
    SETTINGS PROFILE 'whystream_analyst';
GRANT whystream_analyst TO whystream_reader;

-- How much an analyst may ask of the server per hour.
CREATE QUOTA IF NOT EXISTS whystream_analyst
    FOR INTERVAL 1 hour MAX queries = 2000, errors = 500, result_rows = 100000000, read_rows = 20000000000,
        execution_time = 7200
    TO whystream_analyst, whystream_reader;
