"""The service layer: what the routes do, as plain functions over the facade's state, without a
web framework. It asks Triton (`fbmr.serving.triton`) and the similar-listing index
(`fbmr.serving.index`), and refuses what it cannot answer with its own errors
(`fbmr.serving.service.errors`), which the HTTP layer maps to statuses."""
