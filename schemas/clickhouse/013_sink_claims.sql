-- Which rows a deduplication token stands for (jobs/sink_ledger.py). Two sinks
-- inserting under the same token at the same moment must insert the same rows:
-- ClickHouse deduplicates the table and each view on its own, so two different
-- row sets under one token could land one in the table and the other in a view.
-- Before it inserts, a sink claims the token with the offsets it means to insert
-- (the claim insert is deduplicated by the token: the first claim stays); every
-- sink then inserts exactly the claimed offsets under that token, or waits for
-- them to be stored by the sink that holds them.
CREATE TABLE IF NOT EXISTS {db}.sink_claims
(
    token      String,
    offsets    Array(Int64),
    sink       String,
    claimed_at DateTime('UTC') DEFAULT now()
)
ENGINE = MergeTree
ORDER BY token
TTL claimed_at + INTERVAL 30 DAY DELETE
SETTINGS non_replicated_deduplication_window = 100000;
