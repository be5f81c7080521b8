"""The retention dashboard: a read-only web page, Prometheus metrics and health checks.

`figures` holds the aggregate reads (shared with `worker.ops.metrics` and
`worker.ops.status`), `chart` draws the deadlines chart as inline SVG, `web` is the
Starlette application that `lethe dashboard` serves.
"""
