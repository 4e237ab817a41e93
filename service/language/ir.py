"""The validated model: what the validator produces and the lowering stage consumes.

Everything here is plain, immutable data. Shapes are resolved; indices were
range-checked against the data; nodes are in dependency order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from service.language.expr import Node, recurrence_lengths, to_text

Shape = tuple[int, ...]


@dataclass(frozen=True)
class DistCall:
    """A distribution with its arguments bound to numpyro's parameter names."""

    name: str
    args: tuple[tuple[str, Node], ...]
    static: tuple[tuple[str, int], ...] = ()
    """Arguments that must be Python integers when lowered (LKJ dimension)."""
    event_shape: Shape = ()
    nested: tuple[tuple[str, DistCall], ...] = ()
    """Arguments that are distributions (a mixture's mixing and component distributions)."""

    def text(self) -> str:
        """As the spec writes it (parses back to the same call): keywords, and a MixtureGeneral's mixing
        distribution and components positionally."""
        if self.variadic:
            mixing = dict(self.nested)["mixing_distribution"]
            return f"{self.name}({', '.join([mixing.text(), *(c.text() for c in self.variadic)])})"
        parts = [f"{k}={to_text(v)}" for k, v in self.args] + [f"{k}={v}" for k, v in self.static]
        parts += [f"{k}={call.text()}" for k, call in self.nested]
        return f"{self.name}({', '.join(parts)})"

    @property
    def variadic(self) -> tuple[DistCall, ...]:
        """A MixtureGeneral's components, in order: the nested calls bound as `<name>.0`, `<name>.1`, ... (the
        catalog's `DistInfo.variadic`)."""
        return tuple(call for k, call in self.nested if "." in k)

    @property
    def component(self) -> DistCall:
        """What draws look like: a mixture's (first) component distribution, else the distribution itself. The
        components of a mixture share their support."""
        inner = next((call for k, call in self.nested if k != "mixing_distribution"), None)
        return self if inner is None else inner.component


@dataclass(frozen=True)
class Param:
    """A random variable sampled by NUTS."""

    name: str
    dist: DistCall
    shape: Shape
    """Shape of one draw (batch + event)."""
    batch_shape: Shape
    """Shape the distribution is expanded to; `shape` without the event dimensions."""
    dims: tuple[str, ...]
    noncentered: bool = False
    label: str = ""
    """Name in the draws when it differs from `name` (e.g. `1|county`); see `output`."""
    keep: bool = True
    """Stored by default; False for internal params (raw effects, Cholesky factors)."""

    @property
    def output(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class Define:
    """A deterministic quantity, computed from params and data and kept in the draws."""

    name: str
    expr: Node
    shape: Shape
    dims: tuple[str, ...]
    label: str = ""
    keep: bool = True

    @property
    def output(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class Observe:
    """A likelihood term: data variable `name` is distributed as `dist`."""

    name: str
    dist: DistCall
    shape: Shape
    batch_shape: Shape


@dataclass(frozen=True)
class Factor:
    """A term added to the log density: the sum of its expression (Stan's `target +=`)."""

    name: str
    expr: Node
    shape: Shape


@dataclass(frozen=True)
class FittedMember:
    """One param of the model that a fitted prior replaces, in the prior's vector order."""

    param: str
    """The param's name (not its label)."""
    shape: Shape
    support: str
    """real, positive, unit or interval(a, b) (floats as repr writes them): what the param's declared
    distribution lives on, and so numpyro's `biject_to` transform from the unconstrained scale."""


@dataclass(frozen=True)
class MvnComponent:
    """One multivariate normal of a fitted prior on the members' concatenated unconstrained vector."""

    weight: float
    loc: tuple[float, ...]
    scale_tril: tuple[tuple[float, ...], ...]
    """Rows of the lower-triangular factor (d x d, positive diagonal)."""


@dataclass(frozen=True)
class MarginalComponent:
    """One mixture component of one member's marginal prior."""

    weight: float
    dist: str
    """A numpyro family (service/language/fitted.py MARGINAL_FAMILIES)."""
    args: tuple[tuple[str, float | tuple[float, ...]], ...]
    """By numpyro's argument names: a float, or the member's shape flattened in C order."""


@dataclass(frozen=True)
class FittedPrior:
    """A published prior that replaces the declared priors of its members, jointly (section `fitted_priors`)."""

    source: str
    """Where it came from, for users (`hospitals@3`)."""
    method: str
    """mvn: one (mixture of) multivariate normal(s) on the unconstrained vector; marginal: one per member."""
    members: tuple[FittedMember, ...]
    components: tuple[MvnComponent, ...] = ()
    """method mvn: one component, or a mixture."""
    marginals: tuple[tuple[MarginalComponent, ...], ...] = ()
    """method marginal: per member, its mixture components."""

    @cached_property
    def digest(self) -> str:
        """sha256 of the whole prior (computed once: a d = 2000 prior has millions of numbers)."""
        return hashlib.sha256(repr(self).encode()).hexdigest()


@dataclass(frozen=True, eq=False)
class Model:
    """A validated model: data as arrays, nodes in dependency order, observations."""

    data: dict[str, np.ndarray]
    coords: dict[str, list[Any]]
    nodes: tuple[Param | Define, ...]
    observes: tuple[Observe, ...]
    spec: dict[str, Any] = field(default_factory=dict)
    factors: tuple[Factor, ...] = ()
    """The spec as the user gave it (after the formula front end, if any)."""
    fitted: tuple[FittedPrior, ...] = ()
    """Fitted (empirical) priors replacing the declared priors of their members."""

    @property
    def params(self) -> tuple[Param, ...]:
        return tuple(n for n in self.nodes if isinstance(n, Param))

    @property
    def defines(self) -> tuple[Define, ...]:
        return tuple(n for n in self.nodes if isinstance(n, Define))

    @property
    def variables(self) -> dict[str, Param | Define]:
        """Everything that can appear in the draws, by output name (label, else name)."""
        return {n.output: n for n in self.nodes}

    @property
    def fitted_by_param(self) -> dict[str, tuple[int, FittedPrior]]:
        """(index in `fitted`, prior) of each param a fitted prior replaces."""
        return {m.param: (i, prior) for i, prior in enumerate(self.fitted) for m in prior.members}

    def kept(self, keep: list[str] | None) -> list[Param | Define]:
        """The nodes stored in the draws: those named in `keep`, else all not marked internal."""
        if keep is None:
            return [n for n in self.nodes if n.keep]
        return [n for n in self.nodes if n.output in keep or n.name in keep]

    def structure_key(self) -> str:
        """Hash of everything that shapes the compiled program: not the data values.

        Two models with the same key run through the same compiled functions.
        """
        layout = {
            "nodes": repr(self.nodes),
            "observes": repr(self.observes),
            **({"factors": repr(self.factors)} if self.factors else {}),
            "data": {k: [v.dtype.str, list(v.shape)] for k, v in sorted(self.data.items())},
        }
        if self.fitted:  # its numbers are constants of the compiled program
            layout["fitted"] = [prior.digest for prior in self.fitted]
        if lengths := self.static_data():  # a recurrence's length from data is a constant of the program too
            layout["static"] = lengths
        return hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest()

    def static_data(self) -> dict[str, int]:
        """Integer scalar data that fix the compiled program: those naming a recurrence's length."""
        found: dict[str, int] = {}
        roots: list[Any] = [n.expr for n in self.nodes if isinstance(n, Define)] + [f.expr for f in self.factors]
        calls: list[DistCall] = [p.dist for p in self.params] + [o.dist for o in self.observes]
        while calls:
            call = calls.pop()
            roots += [v for _, v in call.args]
            calls += [c for _, c in call.nested]
        for root in roots:
            for name in recurrence_lengths(root):
                if name in self.data:
                    found[name] = int(self.data[name])
        return dict(sorted(found.items()))

    def parameter_layout(self) -> str:
        """Hash of what shapes the unconstrained parameter vector NUTS moves on: each param's name, shape,
        distribution and parameterization, and the fitted priors' members. Two models with the same layout
        (more rows of data, new values) can continue each other's chains: what a warm start needs."""
        layout = {
            "params": [[p.name, list(p.shape), p.dist.name, list(p.dist.event_shape), p.noncentered]
                       for p in self.params],
            "fitted": [[[m.param, list(m.shape), m.support] for m in prior.members] for prior in self.fitted],
        }
        return hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest()

    def fingerprint(self) -> str:
        """Hash of the model including the data values and coordinate labels."""
        h = hashlib.sha256(self.structure_key().encode())
        for name, value in sorted(self.data.items()):
            h.update(name.encode())
            h.update(np.ascontiguousarray(value).tobytes())
        h.update(json.dumps(self.coords, sort_keys=True, default=str).encode())
        return h.hexdigest()
