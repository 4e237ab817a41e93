"""The graph spec's `fitted_priors` section: published (empirical) priors that replace declared ones.

The section is written by the service when it resolves a job's `priors_from` (never typed by hand, but
checked as if it were). Each entry names the params it replaces (`members`, in vector order) and either

- `mvn`: `components`, one or a mixture of multivariate normals on the members' unconstrained vector
  (flattened in C order and concatenated; length d), the scale numpyro's `biject_to` maps to each member's
  support; or
- `marginal`: `marginals`, per member a mixture of one-dimensional families (elementwise over its shape).

A member must be a continuous param of the model with exactly the stated shape and the support of its
declared distribution (`declared_support`); the declared distribution itself no longer applies. Every problem
is collected with its path (`fitted_priors[0].members[1].support`), like sections.py does for the others.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.exceptions import Problem
from service.language.expr import Name, Neg, Node, Num
from service.language.ir import FittedMember, FittedPrior, MarginalComponent, Model, MvnComponent, Param, Shape
from service.language.shapes import MAX_DIMS
from service.language.text import label_problem

MAX_FITTED_PRIORS = 64
"""Entries of the section."""
MAX_FITTED_DIM = 2_000
"""Length d of one prior's vector: its scale_tril holds d * d numbers per component."""
MAX_FITTED_NUMBERS = 5_000_000
"""Numbers in the whole section (about 40 MB as float64): two d = 1500 mixture components fit."""
MAX_COMPONENTS = 8
"""Mixture components of one prior, or of one member's marginal."""
MAX_SOURCE_CHARS = 200
WEIGHT_TOLERANCE = 1e-9
"""How far the weights may sum from 1."""

METHODS = ("mvn", "marginal")
ENTRY_KEYS = ("source", "method", "members", "components", "marginals")
MEMBER_KEYS = ("param", "shape", "support")
COMPONENT_KEYS = ("weight", "loc", "scale_tril")
MARGINAL_KEYS = ("weight", "dist", "args")
SUPPORTS = ("real", "positive", "unit", "interval(a, b)")


@dataclass(frozen=True)
class Family:
    """A family a marginal may use: numpyro's argument names (all required) and its support."""

    args: tuple[str, ...]
    support: str
    real_args: tuple[str, ...] = ()
    """Arguments that may be any finite number; the others must be positive."""


MARGINAL_FAMILIES: dict[str, Family] = {
    "Normal": Family(("loc", "scale"), "real", ("loc",)),
    "StudentT": Family(("df", "loc", "scale"), "real", ("loc",)),
    "LogNormal": Family(("loc", "scale"), "positive", ("loc",)),
    "Gamma": Family(("concentration", "rate"), "positive"),
    "InverseGamma": Family(("concentration", "rate"), "positive"),
    "HalfNormal": Family(("scale",), "positive"),
    "Exponential": Family(("rate",), "positive"),
    "Weibull": Family(("scale", "concentration"), "positive"),
    "Beta": Family(("concentration1", "concentration0"), "unit"),
}

_INTERVAL_RE = re.compile(r"^interval\(\s*([^,()\s]+)\s*,\s*([^,()\s]+)\s*\)$")
_CATALOG_SUPPORTS = {"real": "real", "positive": "positive", "nonnegative": "positive", "unit": "unit"}
"""The catalog's support of a distribution -> the unconstrained transform's support (HalfNormal, HalfCauchy
and Exponential live on numpyro's `positive`)."""


class _Budget:
    """Numbers left for the section; the first entry past the limit is a problem and stops the reading."""

    def __init__(self) -> None:
        self.left = MAX_FITTED_NUMBERS
        self.exceeded = False

    def take(self, count: int, path: str, problems: list[Problem]) -> bool:
        self.left -= count
        if self.left < 0 and not self.exceeded:
            self.exceeded = True
            problems.append(Problem(path, f"fitted_priors hold more than {MAX_FITTED_NUMBERS} numbers in all"))
        return not self.exceeded


def check(raw: Any, model: Model | None, problems: list[Problem]) -> tuple[FittedPrior, ...]:
    """The section `raw` (None if absent) checked, and against `model`'s params when it resolved."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(Problem("fitted_priors", f"must be a list of fitted priors, got {type(raw).__name__}"))
        return ()
    if len(raw) > MAX_FITTED_PRIORS:
        problems.append(Problem("fitted_priors", f"more than {MAX_FITTED_PRIORS} fitted priors"))
        return ()
    budget = _Budget()
    read = [_entry(entry, f"fitted_priors[{i}]", budget, problems) if not budget.exceeded else (None, None)
            for i, entry in enumerate(raw)]
    if model is None:
        return ()
    before = len(problems)
    bound = _bind([members for members, _ in read], model, problems)  # also where the rest had problems
    if len(problems) > before or any(prior is None for _, prior in read):
        return ()
    return tuple(dataclasses.replace(prior, members=members)
                 for (_, prior), members in zip(read, bound, strict=True) if prior is not None)


def support_text(support: str) -> str | None:
    """The canonical spelling of a section's support (`interval(0.0, 10.0)`; interval(0, 1) is unit), or None."""
    if support in ("real", "positive", "unit"):
        return support
    match = _INTERVAL_RE.match(support)
    if match is None:
        return None
    try:
        low, high = float(match.group(1)), float(match.group(2))
    except ValueError:
        return None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        return None
    return _interval(low, high)


def interval_bounds(support: str) -> tuple[float, float] | None:
    """(a, b) of a canonical `interval(a, b)`, else None."""
    match = _INTERVAL_RE.match(support)
    return (float(match.group(1)), float(match.group(2))) if match else None


def declared_support(param: Param, data: Mapping[str, np.ndarray]) -> str | None:
    """The support (as the section spells it) of the distribution `param` declares, or None when a fitted
    prior cannot replace it (a simplex, a correlation matrix, Uniform with bounds known only when sampling)."""
    from service.language.catalog import DISTRIBUTIONS

    call = param.dist.component  # a mixture's support is its components'
    info = DISTRIBUTIONS[call.name]
    if info.discrete:
        return None
    if info.support == "interval":
        args = dict(call.args)
        low, high = _known_scalar(args.get("low"), data), _known_scalar(args.get("high"), data)
        if low is None or high is None or not low < high:
            return None
        return _interval(low, high)
    return _CATALOG_SUPPORTS.get(info.support)


def _interval(low: float, high: float) -> str:
    return "unit" if (low, high) == (0.0, 1.0) else f"interval({low!r}, {high!r})"


def _known_scalar(node: Node | None, data: Mapping[str, np.ndarray]) -> float | None:
    if isinstance(node, Neg):
        inner = _known_scalar(node.operand, data)
        return None if inner is None else -inner
    if isinstance(node, Num):
        return float(node.value)
    if isinstance(node, Name) and node.id in data and data[node.id].ndim == 0:
        return float(data[node.id])
    return None


# -- the section on its own ----------------------------------------------------------------------


def _entry(raw: Any, path: str, budget: _Budget,
           problems: list[Problem]) -> tuple[tuple[FittedMember, ...] | None, FittedPrior | None]:
    """(the members, or None after a problem with them; the prior, or None after any problem)."""
    if not isinstance(raw, Mapping):
        problems.append(Problem(path, "must be a mapping with source, method, members and components or "
                                      "marginals"))
        return None, None
    before = len(problems)
    for key in raw:
        if key not in ENTRY_KEYS:
            problems.append(Problem(f"{path}.{key}", f"unknown field; expected one of {', '.join(ENTRY_KEYS)}"))
    source = raw.get("source")
    if not isinstance(source, str) or not source:
        problems.append(Problem(f"{path}.source", "must be a non-empty string (the prior and its version)"))
    elif (problem := label_problem(source, max_chars=MAX_SOURCE_CHARS)) is not None:
        problems.append(Problem(f"{path}.source", problem))
    method = raw.get("method")
    if method not in METHODS:
        problems.append(Problem(f"{path}.method", f"must be one of {', '.join(METHODS)}, got {method!r:.40}"))
    members = _members(raw.get("members"), f"{path}.members", problems)
    components: tuple[MvnComponent, ...] = ()
    marginals: tuple[tuple[MarginalComponent, ...], ...] = ()
    if method == "mvn":
        if "marginals" in raw:
            problems.append(Problem(f"{path}.marginals", "method mvn takes components, not marginals"))
        dim = sum(math.prod(m.shape) for m in members) if members is not None else None
        components = _mvn(raw.get("components"), dim, f"{path}.components", budget, problems)
    elif method == "marginal":
        if "components" in raw:
            problems.append(Problem(f"{path}.components", "method marginal takes marginals, not components"))
        marginals = _marginals(raw.get("marginals"), members, f"{path}.marginals", budget, problems)
    if len(problems) > before or members is None:
        return members, None
    assert isinstance(source, str) and isinstance(method, str)
    return members, FittedPrior(source=source, method=method, members=members, components=components,
                                marginals=marginals)


def _members(raw: Any, path: str, problems: list[Problem]) -> tuple[FittedMember, ...] | None:
    if not isinstance(raw, list) or not raw:
        problems.append(Problem(path, "must be a non-empty list of {param, shape, support}"))
        return None
    out: list[FittedMember] = []
    for i, entry in enumerate(raw):
        where = f"{path}[{i}]"
        if not isinstance(entry, Mapping):
            problems.append(Problem(where, "must be a mapping with param, shape and support"))
            continue
        for key in entry:
            if key not in MEMBER_KEYS:
                problems.append(Problem(f"{where}.{key}", f"unknown field; expected one of {', '.join(MEMBER_KEYS)}"))
        param, shape, support = entry.get("param"), entry.get("shape"), entry.get("support")
        ok = True
        if not isinstance(param, str) or not param:
            problems.append(Problem(f"{where}.param", "must be the name of a param of this model"))
            ok = False
        if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(
                isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_FITTED_DIM for n in shape):
            problems.append(Problem(f"{where}.shape", f"must be a list of at most {MAX_DIMS} positive sizes "
                                                      "([] for a scalar)"))
            ok = False
        canonical = support_text(support) if isinstance(support, str) else None
        if canonical is None:
            hint = "; a non-negative param's support is positive" if support == "nonnegative" else ""
            problems.append(Problem(f"{where}.support", f"must be one of {', '.join(SUPPORTS)} (a < b, finite), "
                                                        f"got {support!r:.60}{hint}"))
            ok = False
        if ok:
            assert isinstance(param, str) and isinstance(shape, list) and canonical is not None
            out.append(FittedMember(param=param, shape=tuple(shape), support=canonical))
    return tuple(out) if len(out) == len(raw) else None


def _weight(raw: Any, path: str, problems: list[Problem]) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw) or raw <= 0:
        problems.append(Problem(path, f"must be a positive number, got {raw!r:.40}"))
        return None
    return float(raw)


def _component_head(entry: Any, where: str, fields: tuple[str, ...], problems: list[Problem]) -> float | None:
    """A component's shape and weight: a mapping of `fields` only (each unknown one a problem)."""
    if not isinstance(entry, Mapping):
        problems.append(Problem(where, f"must be a mapping with {', '.join(fields[:-1])} and {fields[-1]}"))
        return None
    for key in entry:
        if key not in fields:
            problems.append(Problem(f"{where}.{key}", f"unknown field; expected one of {', '.join(fields)}"))
    return _weight(entry.get("weight"), f"{where}.weight", problems)


def _components_list(raw: Any, path: str, what: str, problems: list[Problem]) -> list[Any] | None:
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_COMPONENTS:
        problems.append(Problem(path, f"must be a list of 1 to {MAX_COMPONENTS} {what} (2 or more: a mixture)"))
        return None
    return raw


def _weights_sum(weights: list[float | None], path: str, problems: list[Problem]) -> None:
    if all(w is not None for w in weights):
        total = math.fsum(w for w in weights if w is not None)
        if abs(total - 1.0) > WEIGHT_TOLERANCE:
            problems.append(Problem(path, f"the weights sum to {total!r}, not 1"))


def _mvn(raw: Any, dim: int | None, path: str, budget: _Budget,
         problems: list[Problem]) -> tuple[MvnComponent, ...]:
    entries = _components_list(raw, path, "components {weight, loc, scale_tril}", problems)
    if entries is None:
        return ()
    if dim is not None and dim > MAX_FITTED_DIM:
        problems.append(Problem(path, f"the members have {dim} elements in all; a fitted prior has at most "
                                      f"{MAX_FITTED_DIM}"))
        return ()
    out: list[MvnComponent] = []
    weights: list[float | None] = []
    for i, entry in enumerate(entries):
        where = f"{path}[{i}]"
        weight = _component_head(entry, where, COMPONENT_KEYS, problems)
        weights.append(weight)
        if not isinstance(entry, Mapping):
            continue
        if dim is None:  # the members have problems: d is unknown
            continue
        if not budget.take(dim + dim * dim, where, problems):
            return ()
        loc = _numbers(entry.get("loc"), (dim,), f"{where}.loc", problems)
        tril = _numbers(entry.get("scale_tril"), (dim, dim), f"{where}.scale_tril", problems)
        if tril is not None and not _lower_triangular(tril, f"{where}.scale_tril", problems):
            tril = None
        if weight is not None and loc is not None and tril is not None:
            out.append(MvnComponent(weight=weight, loc=tuple(loc.tolist()),
                                    scale_tril=tuple(tuple(row) for row in tril.tolist())))
    _weights_sum(weights, path, problems)
    return tuple(out)


def _lower_triangular(tril: np.ndarray, path: str, problems: list[Problem]) -> bool:
    above = np.argwhere(np.triu(tril, 1) != 0)
    if above.size:
        i, j = (int(k) for k in above[0])
        problems.append(Problem(f"{path}[{i}][{j}]", "must be 0: scale_tril is lower triangular"))
        return False
    diagonal = np.diag(tril)
    if np.any(diagonal <= 0):
        i = int(np.argmax(diagonal <= 0))
        problems.append(Problem(f"{path}[{i}][{i}]", f"the diagonal must be positive, got {diagonal[i]!r}"))
        return False
    return True


def _marginals(raw: Any, members: tuple[FittedMember, ...] | None, path: str, budget: _Budget,
               problems: list[Problem]) -> tuple[tuple[MarginalComponent, ...], ...]:
    if not isinstance(raw, list):
        problems.append(Problem(path, "must be a list with one entry per member (each a list of components)"))
        return ()
    if members is not None and len(raw) != len(members):
        problems.append(Problem(path, f"has {len(raw)} entries for {len(members)} members; one per member"))
        return ()
    out = []
    for k, entries in enumerate(raw):
        member = members[k] if members is not None else None
        mixture = _marginal(entries, member, f"{path}[{k}]", budget, problems)
        if budget.exceeded:
            return ()
        out.append(mixture)
    return tuple(out)


def _marginal(raw: Any, member: FittedMember | None, path: str, budget: _Budget,
              problems: list[Problem]) -> tuple[MarginalComponent, ...]:
    entries = _components_list(raw, path, "components {weight, dist, args}", problems)
    if entries is None:
        return ()
    out: list[MarginalComponent] = []
    weights: list[float | None] = []
    for i, entry in enumerate(entries):
        where = f"{path}[{i}]"
        weight = _component_head(entry, where, MARGINAL_KEYS, problems)
        weights.append(weight)
        if not isinstance(entry, Mapping):
            continue
        name = entry.get("dist")
        family = MARGINAL_FAMILIES.get(name) if isinstance(name, str) else None
        if family is None:
            problems.append(Problem(f"{where}.dist", f"must be one of {', '.join(MARGINAL_FAMILIES)}, "
                                                     f"got {name!r:.40}"))
            continue
        if member is not None and family.support != member.support:
            problems.append(Problem(f"{where}.dist", f"{name} has support {family.support}, the member "
                                                     f"{member.param} has support {member.support}"))
            continue
        args = _args(entry.get("args"), family, member, f"{where}.args", budget, problems)
        if weight is not None and args is not None:
            assert isinstance(name, str)
            out.append(MarginalComponent(weight=weight, dist=name, args=args))
    _weights_sum(weights, path, problems)
    return tuple(out)


def _args(raw: Any, family: Family, member: FittedMember | None, path: str, budget: _Budget,
          problems: list[Problem]) -> tuple[tuple[str, float | tuple[float, ...]], ...] | None:
    if not isinstance(raw, Mapping):
        problems.append(Problem(path, f"must be a mapping of {', '.join(family.args)}"))
        return None
    unknown = [str(k) for k in raw if k not in family.args]
    missing = [k for k in family.args if k not in raw]
    if unknown or missing:
        problems.append(Problem(path, f"takes exactly {', '.join(family.args)}" +
                                      (f"; unknown {', '.join(unknown)}" if unknown else "") +
                                      (f"; missing {', '.join(missing)}" if missing else "")))
        return None
    out: list[tuple[str, float | tuple[float, ...]]] = []
    for key in family.args:
        where = f"{path}.{key}"
        value = raw[key]
        scalar = isinstance(value, int | float) and not isinstance(value, bool)
        shape = () if scalar else member.shape if member is not None else None
        if not budget.take(math.prod(shape) if shape is not None else 1, where, problems):
            return None
        values = _numbers(value, shape, where, problems)
        if values is None:
            continue
        if key not in family.real_args and np.any(values <= 0):
            problems.append(Problem(where, f"must be positive, got {float(values.min())!r}"))
            continue
        out.append((key, float(values) if scalar else tuple(values.reshape(-1).tolist())))
    return tuple(out) if len(out) == len(family.args) else None


def _numbers(raw: Any, shape: Shape | None, path: str, problems: list[Problem]) -> np.ndarray | None:
    """A finite float64 array of exactly `shape` (None: any) from a number or nested lists of numbers (no bools,
    no text)."""
    if shape is None:
        wanted = "numbers"
    elif not shape:
        wanted = "a number"
    else:
        wanted = f"a list of {shape[0]} numbers" if len(shape) == 1 else f"nested lists of shape {list(shape)}"
    if raw is None or isinstance(raw, str | bool):
        problems.append(Problem(path, f"must be {wanted}, got {raw!r:.40}"))
        return None
    try:
        values = np.array(raw)
    except (ValueError, TypeError, RecursionError, OverflowError):
        problems.append(Problem(path, f"must be {wanted} (rectangular)"))
        return None
    if values.dtype.kind not in "iuf":
        problems.append(Problem(path, f"must be {wanted}, of numbers only"))
        return None
    if shape is not None and values.shape != shape:
        problems.append(Problem(path, f"must be {wanted}, got shape {list(values.shape)}"))
        return None
    values = values.astype(np.float64)
    if not np.all(np.isfinite(values)):
        bad = np.argwhere(~np.isfinite(values))[0]
        problems.append(Problem(path + "".join(f"[{int(i)}]" for i in bad), "must be a finite number"))
        return None
    return values


# -- against the model ---------------------------------------------------------------------------


def _bind(entries: list[tuple[FittedMember, ...] | None], model: Model,
          problems: list[Problem]) -> list[tuple[FittedMember, ...]]:
    """Each entry's members resolved to the model's params (by name, else by a unique label) and checked
    against them; an entry that could not be read (None) is skipped but keeps its index."""
    params = {p.name: p for p in model.params}
    labels: dict[str, list[Param]] = {}
    for p in model.params:
        if p.label:
            labels.setdefault(p.label, []).append(p)
    defines = {d.name for d in model.defines} | {d.label for d in model.defines if d.label}
    taken: dict[str, str] = {}
    out: list[tuple[FittedMember, ...]] = []
    for i, members in enumerate(entries):
        resolved = []
        for k, member in enumerate(members or ()):
            path = f"fitted_priors[{i}].members[{k}]"
            param = params.get(member.param)
            if param is None and len(labels.get(member.param, [])) == 1:
                param = labels[member.param][0]
            if param is None:
                kind = "a define" if member.param in defines else "data" if member.param in model.data else None
                if kind:
                    problems.append(Problem(f"{path}.param", f"{member.param!r} is {kind}, not a param; a fitted "
                                                             "prior replaces the prior of a param"))
                else:
                    known = ", ".join(sorted(params)[:12]) + (", ..." if len(params) > 12 else "")
                    problems.append(Problem(f"{path}.param", f"no param {member.param!r} in this model; its params "
                                                             f"are {known}"))
                continue
            named = f"params.{param.name}" + (f" ({param.label})" if param.label else "")
            if param.name in taken:
                problems.append(Problem(f"{path}.param", f"{named} already gets a fitted prior at {taken[param.name]}"
                                                         "; a param gets at most one"))
                continue
            taken[param.name] = path
            if member.shape != param.shape:
                problems.append(Problem(f"{path}.shape", f"the prior has shape {list(member.shape)}, {named} has "
                                                         f"shape {list(param.shape)}"))
            declared = declared_support(param, model.data)
            if declared is None:
                problems.append(Problem(f"{path}.support", f"{named} declares {param.dist.name}, whose support a "
                                                           f"fitted prior cannot replace (it needs one of "
                                                           f"{', '.join(SUPPORTS)}, with literal interval bounds)"))
            elif declared != member.support:
                problems.append(Problem(f"{path}.support", f"the prior has support {member.support}, {named} "
                                                           f"declares {param.dist.name} ({declared})"))
            resolved.append(FittedMember(param=param.name, shape=member.shape, support=member.support))
        out.append(tuple(resolved))
    return out
