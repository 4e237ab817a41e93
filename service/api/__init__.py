"""The REST API (FastAPI). Imports no JAX."""
