"""fbmr.serving: the FastAPI facade over Triton with FAISS similar-listing search (no torch).

In layers, each a folder (docs/architecture.md has the map and the import rules, which
tests/test_layers.py holds): `http` (the app, middleware, request checks, routes) calls `service`
(the work the routes share), which asks `triton` (the ensembles, the rollout, a local server) and
`index` (the similar-listing index and its live updates). `settings`, `metrics` and
`request_context` here are read by every layer; `cli` holds `fbmr serve`, `fbmr index` and
`fbmr model`.
"""
