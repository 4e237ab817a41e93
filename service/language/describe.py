"""A validated model as users read it: what `chainyard validate` and the validate route return."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.language import expr
from service.language.ir import FittedPrior, MarginalComponent, Model, Param


def describe(model: Model) -> dict[str, Any]:
    """Params and defines with shapes and dims, observations, data shapes, and the graph spec that runs."""
    variables = []
    fitted = model.fitted_by_param
    for node in model.nodes:
        entry: dict[str, Any] = {"name": node.output, "kind": "param" if isinstance(node, Param) else "define",
                                 "shape": list(node.shape), "dims": list(node.dims)}
        if not node.keep:
            entry["stored"] = False
        if isinstance(node, Param):
            entry["dist"] = node.dist.text()
            if node.name in fitted:  # the declared dist gives the support only
                prior = fitted[node.name][1]
                entry["prior"] = f"{prior.source} ({prior.method})"
            elif node.noncentered:
                entry["reparam"] = "noncentered"
        else:
            entry["expr"] = expr.to_text(node.expr)
        variables.append(entry)
    return {
        "variables": variables,
        "observe": [{"name": o.name, "dist": o.dist.text(), "shape": list(o.shape)} for o in model.observes],
        "data": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in model.data.items()},
        "graph": graph_spec(model),
    }


def graph_spec(model: Model) -> dict[str, Any]:
    """The model as a graph spec (data omitted): what the formula front end compiles to."""
    params: dict[str, Any] = {}
    define: dict[str, Any] = {}
    for node in model.nodes:
        if isinstance(node, Param):
            entry: dict[str, Any] = {"dist": node.dist.text()}
            if node.dims and not node.dims[0].startswith(f"{node.name}_dim_"):
                entry["dims"] = list(node.dims)
            elif node.shape:
                entry["shape"] = list(node.shape)
            if node.noncentered:
                entry["reparam"] = "noncentered"
        else:
            entry = {"expr": expr.to_text(node.expr)}
            if node.dims and not node.dims[0].startswith(f"{node.name}_dim_"):
                entry["dims"] = list(node.dims)
        if node.label:
            entry["label"] = node.label
        if not node.keep:
            entry["keep"] = False
        if isinstance(node, Param):
            params[node.name] = entry
        else:
            define[node.name] = entry if len(entry) > 1 else entry["expr"]
    out: dict[str, Any] = {"spec": 1, "coords": model.coords, "params": params}
    if define:
        out["define"] = define
    out["observe"] = {o.name: o.dist.text() for o in model.observes}
    if model.factors:
        out["factor"] = {f.name: expr.to_text(f.expr) for f in model.factors}
    if model.fitted:
        out["fitted_priors"] = [fitted_spec(prior) for prior in model.fitted]
    return out


def fitted_spec(prior: FittedPrior) -> dict[str, Any]:
    """A fitted prior as the graph spec's `fitted_priors` entry (service/language/fitted.py reads it back)."""
    entry: dict[str, Any] = {
        "source": prior.source,
        "method": prior.method,
        "members": [{"param": m.param, "shape": list(m.shape), "support": m.support} for m in prior.members],
    }
    if prior.method == "mvn":
        entry["components"] = [{"weight": c.weight, "loc": list(c.loc), "scale_tril": [list(r) for r in c.scale_tril]}
                               for c in prior.components]
    else:
        entry["marginals"] = [[_marginal(c, m.shape) for c in mixture]
                              for m, mixture in zip(prior.members, prior.marginals, strict=True)]
    return entry


def _marginal(component: MarginalComponent, shape: tuple[int, ...]) -> dict[str, Any]:
    args = {k: v if isinstance(v, float) else np.reshape(np.asarray(v, dtype=np.float64), shape).tolist()
            for k, v in component.args}
    return {"weight": component.weight, "dist": component.dist, "args": args}
