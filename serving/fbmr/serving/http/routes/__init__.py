"""The facade's routers, one per resource: prediction, similar listings, listings, model
versions, operations, and the seed-compatible API. A route never imports another: what they share
is in `fbmr.serving.service` or `fbmr.serving.http.deps`."""
