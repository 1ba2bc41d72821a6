"""fbmr.serving: the FastAPI facade over Triton with FAISS similar-listing search (no torch).

The facade lands with the serving work; this distribution fixes its torch-free dependencies now so
the workspace lock covers every component and tests can check that torch stays out.
"""
