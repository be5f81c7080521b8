"""Sweeps: a run opened and approved, its plan and forecast, due lifecycles claimed in
batches, erasure in the shop with its audit, and forgetting what is no longer needed."""
