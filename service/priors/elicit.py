"""Expert elicitation: fit a distribution to quantiles and interval masses (design section 6, SHELF's fitdist).

Each family is fitted by minimising the sum of squared CDF errors over the judgements -- (F(q_p) - p)^2 for a
quantile, (F(high) - F(low) - mass)^2 for an interval -- with scipy's least_squares on an unconstrained
parametrisation (log of every positive parameter), from quantile-regression starting values, on values
standardised to unit spread (so 1e-9 and 1e9 are fitted alike). Deterministic: no random restarts. CDFs are
scipy.special ufuncs (no scipy.stats objects in the loop: a fit costs milliseconds). Parameter names and order
are numpyro's, as service.language.catalog lists them, so the spec string pastes into a model spec.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, special

from service.exceptions import Problem, SpecError
from service.language.catalog import DISTRIBUTIONS
from service.priors.judgements import Judgements, read

__all__ = ["FAMILIES", "Elicitation", "FamilyFit", "elicit"]

Params = tuple[float, ...]
Array = np.ndarray[Any, np.dtype[np.float64]]

LOG_BOUND = 50.0
"""|log| of a positive parameter on the standardised scale stays below this (exp(50) ~ 5e21): no overflow."""

TIE = 1e-10
"""Errors closer than this are a tie, which the simpler family (earlier in FAMILIES) wins."""

SUPPORTS = {"real": (-math.inf, math.inf), "positive": (0.0, math.inf), "unit": (0.0, 1.0)}


@dataclass(frozen=True)
class FamilyFit:
    """One family fitted to the judgements."""

    family: str
    """The numpyro distribution's name: "Beta"."""
    params: dict[str, float]
    """numpyro's parameter names (catalog order) -> value, full precision."""
    error: float
    """Sum of squared CDF errors over the judgements (SHELF's fitdist `ssq`)."""
    spec: str
    """The distribution as the model language writes it, 4 significant digits: "Beta(13.9, 6.1)"."""
    support: str
    """"real", "positive" or "unit"."""


@dataclass(frozen=True)
class Elicitation:
    """Every family fitted, best first."""

    fits: list[FamilyFit]
    best: FamilyFit


@dataclass(frozen=True)
class Family:
    """How to fit one family on the standardised scale (real: (x - shift) / scale; positive: x / scale)."""

    name: str
    support: str
    positive: tuple[bool, ...]
    """Per parameter (catalog order): fitted on the log scale."""
    cdf: Callable[[Array, Params], Array]
    starts: Callable[[Array, Array], list[Params]]
    """Starting values from pseudo-quantiles (probabilities, values); the caller adds `default`."""
    default: Params
    unscale: Callable[[Params, float, float], Params]
    """Standardised parameters, shift, scale -> parameters of the family on the users' scale."""

    @property
    def params(self) -> tuple[str, ...]:
        return DISTRIBUTIONS[self.name].params


# --- the families' CDFs (x already inside the closure of the support) and starting values


def _line(t: Array, y: Array) -> tuple[float, float]:
    """Intercept and slope of y on t by least squares (slope 1 where t cannot give a positive one)."""
    if len(t) == 0:
        return 0.0, 1.0
    dt = t - np.mean(t)
    denominator = float(np.sum(dt * dt))
    slope = float(np.sum(dt * (y - np.mean(y)))) / denominator if denominator > 0 else 1.0
    slope = slope if slope > 0 else 1.0
    return float(np.mean(y)) - slope * float(np.mean(t)), slope


def _through_origin(t: Array, y: Array) -> float:
    """Slope of y on t through the origin (1 where there is none)."""
    denominator = float(np.sum(t * t))
    slope = float(np.sum(t * y)) / denominator if denominator > 0 else 1.0
    return slope if slope > 0 else 1.0


def _positive(p: Array, x: Array) -> tuple[Array, Array]:
    keep = x > 0
    return p[keep], x[keep]


def _normal_starts(p: Array, x: Array) -> list[Params]:
    return [_line(special.ndtri(p), x)]


def _lognormal_starts(p: Array, x: Array) -> list[Params]:
    p, x = _positive(p, x)
    return [_line(special.ndtri(p), np.log(x))]


def _gamma_starts(p: Array, x: Array) -> list[Params]:
    mu, sigma = _lognormal_starts(p, x)[0]  # moments of the matching lognormal
    shape = 1 / math.expm1(min(max(sigma * sigma, 1e-12), 50.0))
    return [(shape, shape / math.exp(min(mu + sigma * sigma / 2, 50.0)))]


def _inverse_gamma_starts(p: Array, x: Array) -> list[Params]:
    shape, rate = _gamma_starts(1 - p[::-1], 1 / x[::-1])[0]  # 1 / X ~ Gamma(shape, rate)
    return [(shape, rate)]


def _weibull_starts(p: Array, x: Array) -> list[Params]:
    p, x = _positive(p, x)
    intercept, slope = _line(np.log(-np.log1p(-p)), np.log(x))  # log x = log scale + log(-log(1 - p)) / k
    return [(math.exp(min(intercept, 50.0)), 1 / slope)]


def _beta_starts(p: Array, x: Array) -> list[Params]:
    mean, sd = _line(special.ndtri(p), x)
    mean = min(max(mean, 0.01), 0.99)
    total = max(mean * (1 - mean) / max(sd * sd, 1e-12) - 1, 0.5)
    return [(mean * total, (1 - mean) * total)]


def _student_t_starts(p: Array, x: Array) -> list[Params]:
    out: list[Params] = []
    for df in (1.0, 4.0, 30.0):
        loc, scale = _line(special.stdtrit(df, p), x)
        out.append((df, loc, scale))
    return out


def _half_normal_starts(p: Array, x: Array) -> list[Params]:
    return [(_through_origin(special.ndtri((1 + p) / 2), x),)]


def _exponential_starts(p: Array, x: Array) -> list[Params]:
    return [(1 / _through_origin(-np.log1p(-p), x),)]


def _location_scale(params: Params, shift: float, scale: float) -> Params:
    *rest, loc, s = params
    return (*rest, shift + scale * loc, scale * s)


FAMILY_LIST = (
    Family("HalfNormal", "positive", (True,), lambda x, q: special.erf(x / (q[0] * math.sqrt(2))),
           _half_normal_starts, (1.0,), lambda q, _, s: (q[0] * s,)),
    Family("Exponential", "positive", (True,), lambda x, q: -np.expm1(-q[0] * x),
           _exponential_starts, (1.0,), lambda q, _, s: (q[0] / s,)),
    Family("Normal", "real", (False, True), lambda x, q: special.ndtr((x - q[0]) / q[1]),
           _normal_starts, (0.0, 1.0), _location_scale),
    Family("LogNormal", "positive", (False, True), lambda x, q: special.ndtr((np.log(x) - q[0]) / q[1]),
           _lognormal_starts, (0.0, 1.0), lambda q, _, s: (q[0] + math.log(s), q[1])),
    Family("Gamma", "positive", (True, True), lambda x, q: special.gammainc(q[0], q[1] * x),
           _gamma_starts, (1.0, 1.0), lambda q, _, s: (q[0], q[1] / s)),
    Family("Beta", "unit", (True, True), lambda x, q: special.betainc(q[0], q[1], x),
           _beta_starts, (1.0, 1.0), lambda q, _, s: q),
    Family("InverseGamma", "positive", (True, True), lambda x, q: special.gammaincc(q[0], q[1] / x),
           _inverse_gamma_starts, (2.0, 1.0), lambda q, _, s: (q[0], q[1] * s)),
    Family("Weibull", "positive", (True, True), lambda x, q: -np.expm1(-((x / q[0]) ** q[1])),
           _weibull_starts, (1.0, 1.0), lambda q, _, s: (q[0] * s, q[1])),
    Family("StudentT", "real", (True, False, True), lambda x, q: special.stdtr(q[0], (x - q[1]) / q[2]),
           _student_t_starts, (4.0, 0.0, 1.0), _location_scale),
)
"""Simplest first: a tie in error goes to the earlier family."""

FAMILIES = tuple(f.name for f in FAMILY_LIST)
"""The families elicitation fits, in tie-breaking order."""

BY_NAME = {f.name: f for f in FAMILY_LIST}


# --- the public function


def elicit(body: Mapping[str, Any]) -> Elicitation:
    """Fit `body["family"]` (or every family whose support holds the judgements: "auto") to the judgements.

        elicit({"family": "auto", "quantiles": {"0.05": 0.5, "0.5": 0.7, "0.95": 0.85}}).best.spec

    Inconsistent or unusable judgements raise SpecError, each problem with its path.
    """
    judgements = read(body)
    if judgements.family == "auto":
        candidates = [f for f in FAMILY_LIST if not _unfit(f, judgements)]
        if not candidates:
            raise SpecError([Problem("quantiles", "no family fits so few judgements on these values: give at "
                                                  "least 2 (a one-parameter family needs positive values)")])
    elif judgements.family in BY_NAME:
        family = BY_NAME[judgements.family]
        problems = _unfit(family, judgements)
        if problems:
            raise SpecError(problems)
        candidates = [family]
    else:
        raise SpecError([Problem("family", f"unknown family {judgements.family!r}; known: auto, "
                                           f"{', '.join(FAMILIES)}")])
    fits = [fit for fit in (_fit(f, judgements) for f in candidates) if fit is not None]
    if not fits:
        raise SpecError([Problem("family", f"could not fit {', '.join(f.name for f in candidates)} to these "
                                           f"judgements")])
    least = min(fit.error for fit in fits)
    order = {name: i for i, name in enumerate(FAMILIES)}

    def rank(fit: FamilyFit) -> tuple[bool, float, bool, int]:
        tied = fit.error <= least + TIE
        return not tied, 0.0 if tied else fit.error, not _bounded_as_hinted(fit.support, judgements), \
            order[fit.family]

    fits.sort(key=rank)
    return Elicitation(fits=fits, best=fits[0])


def _bounded_as_hinted(support: str, judgements: Judgements) -> bool:
    """The support ends where the expert's bound hints say the quantity does (`lower: 0` -> a positive family;
    0 and 1 -> Beta): such a family wins a tie (two judgements fit every two-parameter family exactly)."""
    low, high = SUPPORTS[support]
    return ((judgements.lower is None or judgements.lower == low)
            and (judgements.upper is None or judgements.upper == high))


def _unfit(family: Family, judgements: Judgements) -> list[Problem]:
    """Why `family` cannot be fitted to `judgements` (support, hints, count); empty when it can."""
    low, high = SUPPORTS[family.support]
    shown = f"({low:g}, {high:g})"
    problems = [Problem(q.path, f"{q.value:g} is outside the support of {family.name} {shown}")
                for q in judgements.quantiles if not low < q.value < high]
    for interval in judgements.intervals:
        for name, value in (("low", interval.low), ("high", interval.high)):
            if not low <= value <= high:
                problems.append(Problem(f"{interval.path}.{name}",
                                        f"{value:g} is outside the support of {family.name} {shown}"))
    for name, hint in (("lower", judgements.lower), ("upper", judgements.upper)):
        if hint is not None and not low <= hint <= high:
            problems.append(Problem(name, f"{hint:g} is outside the support of {family.name} {shown}"))
    free = len(family.params) - (family.name == "StudentT" and judgements.df is not None)
    if not problems and judgements.count < free:
        fixing = " (or fix df)" if family.name == "StudentT" else ""
        problems.append(Problem("quantiles", f"{family.name} has {free} free parameters: give at least {free} "
                                             f"judgements{fixing}, got {judgements.count}"))
    if judgements.df is not None and judgements.family not in ("auto", "StudentT"):
        problems.append(Problem("df", f"only StudentT has df, not {family.name}"))
    return problems


# --- fitting one family


@dataclass(frozen=True)
class _Scaled:
    """The judgements on the standardised scale, as arrays."""

    q_prob: Array
    q_value: Array
    low: Array
    high: Array
    mass: Array

    @property
    def pseudo(self) -> tuple[Array, Array]:
        """(probability, value) points for starting values: quantiles, and intervals read as central ones."""
        tail = (1 - self.mass) / 2
        p = np.concatenate([self.q_prob, tail, 1 - tail])
        x = np.concatenate([self.q_value, self.low, self.high])
        return p, x


def _standardisation(judgements: Judgements, support: str) -> tuple[float, float]:
    """(shift, scale) that bring the values to unit spread; a positive support keeps 0, a unit one is as is."""
    values = np.array([q.value for q in judgements.quantiles]
                      + [v for i in judgements.intervals for v in (i.low, i.high)], dtype=float)
    if support == "real":
        shift = float(np.median(values))
        spread = float(np.ptp(values))
        return shift, spread if spread > 0 else (abs(shift) or 1.0)
    if support == "positive":
        return 0.0, float(np.median(values[values > 0]))
    return 0.0, 1.0


def _scaled(judgements: Judgements, shift: float = 0.0, scale: float = 1.0) -> _Scaled:
    def array(values: list[float]) -> Array:
        return (np.array(values, dtype=float) - shift) / scale

    return _Scaled(q_prob=np.array([q.prob for q in judgements.quantiles], dtype=float),
                   q_value=array([q.value for q in judgements.quantiles]),
                   low=array([i.low for i in judgements.intervals]), high=array([i.high for i in judgements.intervals]),
                   mass=np.array([i.mass for i in judgements.intervals], dtype=float))


def _residuals(family: Family, params: Params, s: _Scaled) -> Array:
    lo, hi = SUPPORTS[family.support]

    def clip(x: Array) -> Array:  # interval ends may be the support's ends (0 for a positive family)
        return np.clip(x, lo, hi)

    quantiles = family.cdf(clip(s.q_value), params) - s.q_prob
    intervals = family.cdf(clip(s.high), params) - family.cdf(clip(s.low), params) - s.mass
    out: Array = np.concatenate([quantiles, intervals])
    return np.where(np.isfinite(out), out, 1.0)  # a CDF that fails is as wrong as it gets


def _fit(family: Family, judgements: Judgements) -> FamilyFit | None:
    """The least-squares fit of `family`, or None when no finite one is found."""
    shift, scale = _standardisation(judgements, family.support)
    s = _scaled(judgements, shift, scale)
    fixed_df = judgements.df if family.name == "StudentT" else None
    free = [i for i in range(len(family.params)) if not (fixed_df is not None and i == 0)]

    def natural(u: Array) -> Params:
        values = [fixed_df if fixed_df is not None else 0.0] * len(family.params)
        for k, i in enumerate(free):
            values[i] = math.exp(u[k]) if family.positive[i] else float(u[k])
        return tuple(values)

    def residuals(u: Array) -> Array:
        return _residuals(family, natural(u), s)

    bound = np.array([LOG_BOUND if family.positive[i] else np.inf for i in free])
    best: tuple[float, Params] | None = None
    with np.errstate(all="ignore"):
        p, x = s.pseudo
        for start in [*_safe_starts(family, p, x), family.default]:
            u0 = np.array([math.log(start[i]) if family.positive[i] else start[i] for i in free])
            u0 = np.clip(u0, -bound * 0.999, bound * 0.999)
            if not np.all(np.isfinite(u0)):
                continue
            result = optimize.least_squares(residuals, u0, bounds=(-bound, bound), method="trf", jac="3-point",
                                            xtol=1e-14, ftol=1e-14, gtol=1e-14, max_nfev=400)
            cost = float(np.sum(residuals(result.x) ** 2))
            if math.isfinite(cost) and (best is None or cost < best[0]):
                best = cost, natural(result.x)
        if best is None:
            return None
        params = family.unscale(best[1], shift, scale)
        error = float(np.sum(_residuals(family, params, _scaled(judgements)) ** 2))  # on the users' scale
    if not all(math.isfinite(v) for v in params) or not math.isfinite(error):
        return None
    named = dict(zip(family.params, (float(v) for v in params), strict=True))
    spec = f"{family.name}({', '.join(f'{v:.4g}' for v in params)})"
    return FamilyFit(family=family.name, params=named, error=error, spec=spec, support=family.support)


def _safe_starts(family: Family, p: Array, x: Array) -> Sequence[Params]:
    """The family's starting values that are finite and in its parameter space (pseudo-quantiles may be few,
    and extreme: a start that cannot be computed is skipped, the default start remains)."""
    lo, hi = SUPPORTS[family.support]
    keep = (p > 0) & (p < 1) & (x > lo) & (x < hi)
    try:
        starts = family.starts(p[keep], x[keep]) if np.any(keep) else []
    except ArithmeticError:
        return []
    return [start for start in starts
            if all(math.isfinite(v) and (v > 0 or not positive)
                   for v, positive in zip(start, family.positive, strict=True))]
