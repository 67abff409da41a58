"""Reading whystream's ClickHouse: attribution drift and its alerts (`drift`,
`drift_rule`, `drift_sql`), input drift beside it (`input_drift`), champion vs
challenger (`compare`) and recomputing stored explanations (`verify`). The views
people read (the console and the HTML report) are in jobs/console/."""
