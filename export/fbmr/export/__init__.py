"""fbmr.export: ONNX export of the trained models, checked for parity against PyTorch, and the
Triton model repository (configs for the cpu and gpu targets, ensembles, versioned artifacts)."""
