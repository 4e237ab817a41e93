"""Empirical priors: what the service records of their refits (the nightly `chainyard refit`).

Refit itself arrives with the priors feature (design section 6); this module holds the record that the
Prometheus exporter reads (chainyard_prior_version, chainyard_prior_refit_total,
chainyard_prior_last_refit_ok), so dashboards and alerts work the day refits start.
"""

from __future__ import annotations

from typing import Any, Literal

from service import keys

Outcome = Literal["succeeded", "failed"]


def record_refit(redis: Any, prior: str, outcome: Outcome, version: int | None = None) -> None:
    """Count one refit of `prior`; a successful one publishes its new version."""
    if "|" in prior:
        raise ValueError(f"prior name {prior!r} must not contain '|'")
    pipe = redis.pipeline()
    pipe.hincrby(keys.PRIOR_REFITS, f"{prior}|{outcome}", 1)
    pipe.hset(keys.PRIOR_LAST_OUTCOME, prior, outcome)
    if outcome == "succeeded" and version is not None:
        pipe.hset(keys.PRIOR_VERSIONS, prior, version)
    pipe.execute()
