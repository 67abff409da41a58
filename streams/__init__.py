"""The worker (`whystream worker`): `predictions` in, `explanations` out.

The path of one prediction event: `ingest` takes a batch from Kafka; `engine`
handles it: `validation` (decoded by whystream/wire/, checked, dead letters out),
`sampling/` (priority decisions, reservoir candidates), `attribution` (cache, live
TreeSHAP, fallback), then publishes and tells `ingest` how far it may commit, each
commit recorded first by `checkpointing/`. `assembly` builds the engine's
collaborators from Settings; `store` is its shared Redis; `worker` is the Faust app
around it all, with the web server and the control plane (`control/`).
"""
