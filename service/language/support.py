"""Constraints and supports checked against what is known before sampling: literals and data.

A distribution argument must satisfy its constraint (a scale is positive); data
observed through a distribution must lie in its support (Poisson data are
counts). Arguments that are expressions of params are left to the sampler.
"""

from __future__ import annotations

import numpy as np

from service.exceptions import Problem
from service.language import expr
from service.language.expr import Name, Node, Num
from service.language.sections import DistDraft

CONSTRAINT_TEXT = {
    "positive": "positive",
    "unit": "between 0 and 1",
    "nonnegative_int": "a non-negative integer",
}


def check_argument(dist: DistDraft, name: str, node: Node, data: dict[str, np.ndarray],
                   problems: list[Problem]) -> None:
    """Argument `name` of `dist` against its constraint; a problem at the distribution's path."""
    constraint = dist.info.constraints.get(name)
    if constraint is not None and not satisfies(node, constraint, data):
        problems.append(Problem(dist.path, f"{dist.name}: {name} must be {CONSTRAINT_TEXT[constraint]}, "
                                           f"got {expr.to_text(node)}"))


def satisfies(node: Node, constraint: str, data: dict[str, np.ndarray]) -> bool:
    """False only when a literal or data argument is known to break the constraint."""
    values = known_values(node, data)
    if values is None or values.size == 0:
        return True
    match constraint:
        case "positive":
            return bool(np.all(values > 0))
        case "unit":
            return bool(np.all((values >= 0) & (values <= 1)))
        case "nonnegative_int":
            return bool(np.all(values >= 0) and np.all(np.floor(values) == values))
    return True


def check_observed(dist: DistDraft, values: np.ndarray, data: dict[str, np.ndarray], path: str,
                   problems: list[Problem]) -> None:
    """Observed `values` (the data at `path`) against the support of `dist`."""
    if values.size == 0:
        return
    if dist.info.support in ("component", "components"):  # a mixture: its components' support, the first broken
        found = len(problems)
        for component in dist.components:
            check_observed(component, values, data, path, problems)
            if len(problems) > found:
                break
        return
    integral = bool(np.all(np.floor(values) == values))
    message = None
    match dist.info.support:
        case "positive" if not np.all(values > 0):
            message = "must be positive"
        case "nonnegative" if not np.all(values >= 0):
            message = "must be non-negative"
        case "unit" if not np.all((values > 0) & (values < 1)):
            message = "must lie strictly between 0 and 1"
        case "binary" if not np.all((values == 0) | (values == 1)):
            message = "must be 0 or 1"
        case "count" | "bounded_count" | "category" if not (integral and np.all(values >= 0)):
            message = "must be non-negative integers"
        case "bounded_count":
            total = dist.args.get("total_count")
            bound = known_values(total, data) if total is not None else np.asarray(1)
            if bound is not None and _exceeds(values, bound):
                message = "must not exceed total_count"
        case "category":
            arg = dist.args.get("probs", dist.args.get("logits"))
            probs = data.get(arg.id) if isinstance(arg, Name) else None
            size = probs.shape[-1] if probs is not None and probs.ndim else None
            if size is not None and np.any(values >= size):
                message = f"must be category indices in [0, {size})"
    if message:
        problems.append(Problem(path, f"{message} for {dist.name} (observed in {dist.path})"))


def known_values(node: Node, data: dict[str, np.ndarray]) -> np.ndarray | None:
    """The values of a literal or of data by name; None for anything computed from params."""
    if isinstance(node, Num):
        return np.asarray(node.value)
    if isinstance(node, Name) and node.id in data:
        return data[node.id]
    return None


def _exceeds(values: np.ndarray, bound: np.ndarray) -> bool:
    try:
        return bool(np.any(values > bound))
    except ValueError:  # shapes that do not broadcast: the shape checks speak to those
        return False
