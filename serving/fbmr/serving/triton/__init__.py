"""The Triton layer: the facade's gRPC calls to the ensembles (`inference`), which model version
Triton serves (`rollout`), and a local tritonserver started, watched and stopped (`server`,
`supervisor`, `cli`, with the admin key of `admin`). No web framework and no index."""
