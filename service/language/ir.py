"""The validated model: what the validator produces and the lowering stage consumes.

Everything here is plain, immutable data. Shapes are resolved; indices were
range-checked against the data; nodes are in dependency order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.language.expr import Node, to_text

Shape = tuple[int, ...]


@dataclass(frozen=True)
class DistCall:
    """A distribution with its arguments bound to numpyro's parameter names."""

    name: str
    args: tuple[tuple[str, Node], ...]
    static: tuple[tuple[str, int], ...] = ()
    """Arguments that must be Python integers when lowered (LKJ dimension)."""
    event_shape: Shape = ()

    def text(self) -> str:
        parts = [f"{k}={to_text(v)}" for k, v in self.args] + [f"{k}={v}" for k, v in self.static]
        return f"{self.name}({', '.join(parts)})"


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


@dataclass(frozen=True, eq=False)
class Model:
    """A validated model: data as arrays, nodes in dependency order, observations."""

    data: dict[str, np.ndarray]
    coords: dict[str, list[Any]]
    nodes: tuple[Param | Define, ...]
    observes: tuple[Observe, ...]
    spec: dict[str, Any] = field(default_factory=dict)
    """The spec as the user gave it (after the formula front end, if any)."""

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
            "data": {k: [v.dtype.str, list(v.shape)] for k, v in sorted(self.data.items())},
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
