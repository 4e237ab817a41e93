"""Tenant-scoped datasets (design section 6): typed columns, rows appended as immutable versions whose hashes
chain, stored in Redis as bounded chunks; what refits of empirical priors read.

Modules: schema (names, column types, hashes, the capped problem list), rows (an append's body -> typed columns),
content (the canonical bytes hashed, npz, CSV), record (Dataset, DatasetVersion), store (DatasetStore: Redis).
"""

from __future__ import annotations

from service.datasets.record import Dataset, DatasetVersion
from service.datasets.store import DatasetStore

__all__ = ["Dataset", "DatasetStore", "DatasetVersion"]
