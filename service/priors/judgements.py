"""Expert judgements for elicitation, read from a request body and checked for consistency.

A judgement is a quantile (`P(X <= value) = prob`) or an interval mass (`P(low < X < high) = mass`), as
SHELF elicits them. Everything wrong with a body is collected, each problem with its path, into one SpecError;
what comes out is plain, finite and ordered, so the fitting stage (service.priors.elicit) needs no checks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.exceptions import Problem, SpecError

MAX_JUDGEMENTS = 100
"""Quantiles and intervals together: more is no elicitation, and each costs a CDF evaluation per step."""

MAX_MAGNITUDE = 1e150
"""Largest |value| accepted: beyond it, squares and spreads of the values overflow."""

FIELDS = ("family", "quantiles", "intervals", "df", "lower", "upper")
"""The fields of an elicitation body."""


@dataclass(frozen=True)
class Quantile:
    """P(X <= value) = prob."""

    prob: float
    value: float
    path: str
    """Where it came from in the body (`quantiles.0.05`), for problems found later (support)."""


@dataclass(frozen=True)
class Interval:
    """P(low < X < high) = mass."""

    low: float
    high: float
    mass: float
    path: str
    """`intervals[i]`."""


@dataclass(frozen=True)
class Judgements:
    """A checked elicitation body."""

    family: str
    """A family name or "auto" (checked against the families by service.priors.elicit)."""
    quantiles: tuple[Quantile, ...]
    """In increasing order of probability (and so of value)."""
    intervals: tuple[Interval, ...]
    df: float | None
    """StudentT's degrees of freedom, fixed; None: fitted."""
    lower: float | None
    """The expert's bound hint: the quantity cannot be below it (so neither can any judgement)."""
    upper: float | None

    @property
    def count(self) -> int:
        return len(self.quantiles) + len(self.intervals)

    def values(self) -> list[tuple[str, float]]:
        """Every value the judgements name, with its path (quantile values, interval ends, the bound hints)."""
        out = [(q.path, q.value) for q in self.quantiles]
        for i in self.intervals:
            out += [(f"{i.path}.low", i.low), (f"{i.path}.high", i.high)]
        return out


def read(body: Mapping[str, Any]) -> Judgements:
    """The judgements of `body` ({family, quantiles, intervals, df, lower, upper}), or a SpecError."""
    problems: list[Problem] = []
    if not isinstance(body, Mapping):
        raise SpecError([Problem("", f"an elicitation is a mapping, got {type(body).__name__}")])
    for key in body:
        if key not in FIELDS:
            problems.append(Problem(str(key), f"unknown field; the fields are {', '.join(FIELDS)}"))
    family = body.get("family", "auto")
    if not isinstance(family, str):
        problems.append(Problem("family", f"a family name or 'auto', got {type(family).__name__}"))
        family = "auto"
    quantiles = _quantiles(body.get("quantiles"), problems)
    intervals = _intervals(body.get("intervals"), problems)
    df = _optional_number(body, "df", problems, positive=True)
    lower = _optional_number(body, "lower", problems)
    upper = _optional_number(body, "upper", problems)
    if lower is not None and upper is not None and lower >= upper:
        problems.append(Problem("upper", f"must be greater than lower ({lower:g})"))
    count = len(quantiles) + len(intervals)
    if count == 0 and not problems:
        problems.append(Problem("quantiles", "give at least one judgement (quantiles or intervals)"))
    if count > MAX_JUDGEMENTS:
        problems.append(Problem("quantiles", f"{count} judgements; at most {MAX_JUDGEMENTS} in all"))
    judgements = Judgements(family=family, quantiles=quantiles, intervals=intervals, df=df, lower=lower,
                            upper=upper)
    if not problems:
        _within_bounds(judgements, problems)
    if problems:
        raise SpecError(problems)
    return judgements


def _quantiles(raw: Any, problems: list[Problem]) -> tuple[Quantile, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        problems.append(Problem("quantiles", f"a mapping of probability to value, got {type(raw).__name__}"))
        return ()
    seen: dict[float, str] = {}
    out: list[Quantile] = []
    for key, value in raw.items():
        path = f"quantiles.{key}"
        prob = _probability(key)
        if prob is None:
            problems.append(Problem(path, f"the key must be a probability strictly between 0 and 1, got {key!r}"))
            continue
        number = _number(value)
        if number is None:
            problems.append(Problem(path, f"must be a finite number of magnitude at most {MAX_MAGNITUDE:g}"))
            continue
        if prob in seen:
            problems.append(Problem(path, f"duplicate probability (also given as {seen[prob]})"))
            continue
        seen[prob] = str(key)
        out.append(Quantile(prob=prob, value=number, path=path))
    out.sort(key=lambda q: q.prob)
    for before, after in itertools.pairwise(out):
        if after.value <= before.value:
            problems.append(Problem("quantiles", f"values must increase with the probabilities: "
                                                 f"{before.prob:g} -> {before.value:g} but "
                                                 f"{after.prob:g} -> {after.value:g}"))
    return tuple(out)


def _intervals(raw: Any, problems: list[Problem]) -> tuple[Interval, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(Problem("intervals", f"a list of {{low, high, mass}}, got {type(raw).__name__}"))
        return ()
    out: list[Interval] = []
    for index, item in enumerate(raw):
        path = f"intervals[{index}]"
        if not isinstance(item, Mapping):
            problems.append(Problem(path, f"a mapping {{low, high, mass}}, got {type(item).__name__}"))
            continue
        fields: dict[str, float] = {}
        for key in item:
            if key not in ("low", "high", "mass"):
                problems.append(Problem(f"{path}.{key}", "unknown field; the fields are low, high, mass"))
        for name in ("low", "high", "mass"):
            if name not in item:
                problems.append(Problem(f"{path}.{name}", "missing"))
                continue
            number = _number(item[name])
            if number is None:
                problems.append(Problem(f"{path}.{name}",
                                        f"must be a finite number of magnitude at most {MAX_MAGNITUDE:g}"))
                continue
            fields[name] = number
        if len(fields) < 3:
            continue
        if not 0 < fields["mass"] < 1:
            problems.append(Problem(f"{path}.mass", f"a probability strictly between 0 and 1, got {fields['mass']:g}"))
            continue
        if fields["low"] >= fields["high"]:
            problems.append(Problem(f"{path}.high", f"must be greater than low ({fields['low']:g})"))
            continue
        out.append(Interval(low=fields["low"], high=fields["high"], mass=fields["mass"], path=path))
    return tuple(out)


def _within_bounds(judgements: Judgements, problems: list[Problem]) -> None:
    for path, value in judgements.values():
        if judgements.lower is not None and value < judgements.lower:
            problems.append(Problem(path, f"{value:g} is below lower ({judgements.lower:g})"))
        if judgements.upper is not None and value > judgements.upper:
            problems.append(Problem(path, f"{value:g} is above upper ({judgements.upper:g})"))


def _optional_number(body: Mapping[str, Any], name: str, problems: list[Problem], *,
                     positive: bool = False) -> float | None:
    raw = body.get(name)
    if raw is None:
        return None
    number = _number(raw)
    if number is None or (positive and number <= 0):
        kind = "a positive" if positive else "a"
        problems.append(Problem(name, f"must be {kind} finite number of magnitude at most {MAX_MAGNITUDE:g}"))
        return None
    return number


def _number(raw: Any) -> float | None:
    """A finite float of sane magnitude from a JSON number; None for anything else (strings, bools, NaN)."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    try:
        number = float(raw)
    except OverflowError:  # an int too large for a float
        return None
    return number if math.isfinite(number) and abs(number) <= MAX_MAGNITUDE else None


def _probability(key: Any) -> float | None:
    """A quantile's probability from its key: a number, or a string of one (JSON object keys are strings)."""
    prob: float | None
    if isinstance(key, str):
        try:
            prob = float(key)
        except ValueError:
            return None
    else:
        prob = _number(key)
        if prob is None:
            return None
    return prob if 0 < prob < 1 else None
