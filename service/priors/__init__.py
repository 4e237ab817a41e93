"""Empirical priors (design section 6): definitions, refits, published versions, elicitation.

Modules: metrics (what the Prometheus exporter reads of refits), and the rest as they arrive.
"""

from __future__ import annotations

from service.priors.metrics import record_refit

__all__ = ["record_refit"]
