"""The event pipeline: events in (ingest), deliveries counted and set aside, holds placed
and lifted, lifecycles recomputed and read back."""
