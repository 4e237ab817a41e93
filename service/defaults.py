"""Defaults that more than one module needs, one docstring per constant (Settings' fields default to these)."""

from __future__ import annotations

DIAGNOSTICS_CPU_SHARE = 0.05
"""Share of one core a job's live-figure refreshes may take (Settings.diagnostics_cpu_share): a refresh that cost
c seconds (ArviZ's cost grows with parameters x draws: 0.06 s for eight schools, 0.55 s for 175 parameters x
4000 draws) makes the next one due after max(interval, c / share), e.g. 11 s instead of 5 s for the latter."""
