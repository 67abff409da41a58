"""Exactly once across crashes and rebalances: what a replay needs is recorded before it
matters (`checkpoints`, on `sampling-checkpoints`), and read back, with the outputs
already published, when a partition is assigned (`replay_guard`)."""
