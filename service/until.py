"""Sampling until converged (`sampler.until`): where the rounds end and the decision at each.

Chains run in rounds; a round ends when every chain has the same number of draws, and one decision is taken
from exactly those draws (ArviZ rank-normalized R-hat, bulk and tail ESS over every stored element, as the
summary computes them): stop, or run another round. A decision is a pure function of the draws, so a job's
draws stay a pure function of its model, data and settings, whichever workers run its rounds and however often
they are interrupted. Warmup is never extended. No JAX here: the API, the workers and `chainyard run` decide
alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from service.sampler import SamplerSettings, Until


@dataclass(frozen=True)
class Round:
    """The decision at the end of one round."""

    draws: int
    """Draws per chain (iterations after warmup) the decision saw."""
    max_rhat: float | None
    min_ess_bulk: float | None
    min_ess_tail: float | None
    stop: bool
    reason: str
    """`converged`, `max_draws` or `continue`."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Round:
        return cls(**raw)


def first_target(settings: SamplerSettings) -> int:
    """Draws per chain of the first round (the whole run without `until`)."""
    return settings.draws


def next_target(settings: SamplerSettings, draws: int) -> int:
    """Draws per chain at the end of the round after one that ended at `draws`."""
    assert settings.until is not None
    return min(settings.until.max_draws, draws + settings.until.check_every)


def targets(settings: SamplerSettings) -> list[int]:
    """Every round's end, in draws per chain: [draws] without `until`, else draws, draws + check_every, ...,
    max_draws."""
    out = [first_target(settings)]
    while settings.until is not None and out[-1] < settings.until.max_draws:
        out.append(next_target(settings, out[-1]))
    return out


def decide(until: Until, draws: dict[str, np.ndarray], *, per_chain: int) -> Round:
    """The decision after `per_chain` draws per chain; `draws` are the stored (kept) draws, (chain, draw, ...)."""
    from service.live import convergence  # service.live imports the records that hold Rounds

    figures = convergence(draws)
    rhat, bulk, tail = figures["max_rhat"], figures["min_ess_bulk"], figures["min_ess_tail"]
    converged = (rhat is None or rhat < until.rhat) and (bulk is None or bulk >= until.ess_bulk) \
        and (tail is None or tail >= until.ess_tail)
    if converged:
        reason = "converged"
    elif per_chain >= until.max_draws:
        reason = "max_draws"
    else:
        reason = "continue"
    return Round(draws=per_chain, max_rhat=rhat, min_ess_bulk=bulk, min_ess_tail=tail,
                 stop=reason != "continue", reason=reason)


def explain(last: Round, until: Until) -> str:
    """Why sampling stopped, for the summary and the Job: 'converged at 1500 draws' or what missed at max_draws."""
    if last.reason == "converged":
        return f"converged at {last.draws} draws per chain ({_figures(last)})"
    missed = []
    if last.max_rhat is not None and not last.max_rhat < until.rhat:
        missed.append(f"R-hat {last.max_rhat:.3g} (target < {until.rhat:g})")
    if last.min_ess_bulk is not None and last.min_ess_bulk < until.ess_bulk:
        missed.append(f"bulk ESS {last.min_ess_bulk:.0f} (target >= {until.ess_bulk:g})")
    if last.min_ess_tail is not None and last.min_ess_tail < until.ess_tail:
        missed.append(f"tail ESS {last.min_ess_tail:.0f} (target >= {until.ess_tail:g})")
    text = f"max_draws reached ({last.draws} draws per chain) with {', '.join(missed)}"
    if last.max_rhat is not None and not last.max_rhat < until.rhat:
        text += "; the chains have not mixed: reparameterize (e.g. noncentered group effects) or run a longer warmup"
    else:
        text += "; run more draws (a higher max_draws) or reparameterize"
    return text


def _figures(r: Round) -> str:
    parts = []
    if r.max_rhat is not None:
        parts.append(f"max R-hat {r.max_rhat:.4f}")
    if r.min_ess_bulk is not None:
        parts.append(f"min bulk ESS {r.min_ess_bulk:.0f}")
    if r.min_ess_tail is not None:
        parts.append(f"min tail ESS {r.min_ess_tail:.0f}")
    return ", ".join(parts) or "no figures"


__all__ = ["Round", "decide", "explain", "first_target", "next_target", "targets"]
