"""Use cases: plain values in, `(result, events)` out; no Request, no SQL.

Each use case runs its transaction through the store and returns the events of what changed;
`effects.apply` is the one place that acts on them after the commit (caches, client
connections, metrics, the SQLite checkpoint). The API, the WebSocket and the CLI call these.
"""
