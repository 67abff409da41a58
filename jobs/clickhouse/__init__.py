"""whystream's ClickHouse: connecting (`connection`), the SQL literals every query splices
in (`sql`), the versioned DDL of schemas/clickhouse/ (`migrations`, rewritten for a
replicated cluster by `cluster`), which errors a retry cannot fix (`errors`), the
read-only SQL surface (`guard`) and the sink's query port that serves it (`query_port`),
model references (`references`) and audit retention (`retention`)."""
