"""The Triton layer: the facade's gRPC calls to the ensembles (`inference`), which model version
Triton serves (`rollout`, its smoke test `smoke`, the versions' pin and status `versions`), and a
local tritonserver started, watched and stopped (`server`, `ports`, `processes`, `supervisor`,
`cli`, with the admin key of `admin`). No web framework and no index."""
