"""A validated model as users read it: what `chainyard validate` and the validate route return."""

from __future__ import annotations

from typing import Any

from service.language import expr
from service.language.ir import Model, Param


def describe(model: Model) -> dict[str, Any]:
    """Params and defines with shapes and dims, observations, data shapes, and the graph spec that runs."""
    variables = []
    for node in model.nodes:
        entry: dict[str, Any] = {"name": node.output, "kind": "param" if isinstance(node, Param) else "define",
                                 "shape": list(node.shape), "dims": list(node.dims)}
        if not node.keep:
            entry["stored"] = False
        if isinstance(node, Param):
            entry["dist"] = node.dist.text()
            if node.noncentered:
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
    return out
