"""The facade's routers, one per resource: prediction, similar listings, operations."""
