"""What runs beside the workers: the ClickHouse sink (`sink/`), whystream's ClickHouse
(`clickhouse/`), drift, reports and verification over it (`analytics/`), the
synthetic stream and the demo model (`simulation/`), the demo (`demo`) and the
dead-letter listing (`dlq`)."""
