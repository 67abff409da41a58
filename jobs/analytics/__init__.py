"""Reading whystream's ClickHouse: attribution drift and its alerts (`drift`,
`drift_rule`, `drift_sql`), input drift beside it (`input_drift`; from the sample or every stored
decision: `drift_source`), score consistency (`score_consistency`), champion vs
challenger (`compare`) and recomputing stored explanations (`verify`). The views
people read (the console and the HTML report) are in jobs/console/."""
