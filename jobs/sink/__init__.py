"""`whystream sink`: the `explanations` topic into ClickHouse, exactly once (`sink`, its
consumer loop `consumer`, decoding the next batch while one is written `pipeline`,
the compiled decoder `decoder` and its reference `rows`, the field -> column mapping
`columns`, the ledger `ledger`, the insert `explanation_rows`)."""
