"""fbmr.client: Python client library and batch-scoring CLI for the fbmr facade (no torch).

The client lands after the facade; this distribution fixes its torch-free dependencies now.
"""
