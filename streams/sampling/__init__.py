"""Which decisions to explain: every priority one, and a weighted random sample of the
rest (docs/design.md, The data plane).

- `priority`: the decisions always explained (adverse, flagged, near the threshold,
  a new version's first), inclusion weight 1;
- `reservoirs`: the rest, as candidates, in deterministic bottom-k reservoirs per
  partition, model version, stratum and event-time window, each selected one
  weighted n / k, so that weighted sums estimate population totals without bias,
  and a replay after a crash selects the same ones again;
- `horizon`: the ids a partition has seen over its last windows, so that a
  decision sent again is counted once;
- `config`: the worker's sampling settings.
"""
