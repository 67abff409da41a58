"""Reading whystream's ClickHouse: attribution drift and its alerts (`drift`,
`drift_rule`, `drift_sql`), input drift beside it (`input_drift`), the HTML report
(`report`, `report_html`), champion vs challenger (`compare`) and recomputing
stored explanations (`verify`)."""
