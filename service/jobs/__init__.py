"""Jobs in Redis: the typed record (record), submit/read/cancel/delete and the state machine (store), every
worker-side write (chains), and building a finished job's results (assemble)."""

from service.jobs.store import JobStore

__all__ = ["JobStore"]
