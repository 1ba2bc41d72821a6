"""fbmr.export: ONNX export of the trained models and the Triton model repository.

The export itself lands with the export work; this distribution fixes its dependencies now so the
workspace lock covers every component.
"""
