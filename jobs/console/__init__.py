"""`whystream console` and `whystream report`: the views analysts and auditors read.

One set of views, served live by the console (`server.py`, on loopback, reading ClickHouse
through the SQL guard or a running sink's query port) and written to one self-contained
HTML file by the report (`report.py`):

- `overview.py`: explanation health, alerts, principal reasons, adverse decisions;
- `drift_page.py`: per feature, reference vs now, statistics over time, strata, input drift;
- `decision_page.py`: one decision, printable as an adverse-action file;
- `compare_page.py`: champion vs challenger on the same decisions;
- `figures.py` (Plotly charts), `html.py` (page shell, formats), `period.py` (which minutes),
  `queries.py` (the reads beyond jobs/analytics/), `scores.py` (output spaces and probabilities),
  `access.py` (who may ask the console for what).
"""
