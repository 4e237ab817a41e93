"""Shapes: every node in dependency order resolved to its shape, and the Model built.

A param's shape comes from its distribution (batch + event shape) or from its
declared dims/shape, which must agree; a define's from its expression
(shapes.py); an observed distribution must have the shape of its data. Argument
constraints and observed supports are checked on the way (support.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from service.exceptions import Problem, SpecError
from service.language import expr, support
from service.language.catalog import Event
from service.language.expr import Name, Num
from service.language.ir import Define, DistCall, Factor, Model, Observe, Param, Shape
from service.language.sections import DefineDraft, DistDraft, Draft, ParamDraft, Sections
from service.language.shapes import MAX_DIMS, ShapeChecker, ShapeError, Symbol, broadcast

MAX_PARAM_ELEMENTS = 200_000
"""Total elements of all params: the dimension NUTS works in."""


def resolve(sections: Sections, ordered: list[Draft], problems: list[Problem]) -> Model | None:
    """The Model of `ordered` (names.order's result), or None if any problem was recorded, here or before."""
    data, coords = sections.data, sections.coords
    symbols = {name: Symbol("data", value.shape, value) for name, value in data.items()}
    in_cycles = {d.name for d in sections.drafts} - {d.name for d in ordered}
    symbols.update({name: Symbol("param", None) for name in in_cycles})  # reported as cycles already
    checker = ShapeChecker(symbols)
    nodes: list[Param | Define] = []
    total = 0
    for draft in ordered:
        kind = "param" if isinstance(draft, ParamDraft) else "define"
        node = _param(draft, checker, coords, data, problems) if isinstance(draft, ParamDraft) else \
            _define(draft, checker, coords, problems)
        if node is None:
            symbols[draft.name] = Symbol(kind, None)
            continue
        nodes.append(node)
        symbols[node.name] = Symbol(kind, node.shape)
        if isinstance(node, Param):
            total += math.prod(node.shape)
            if total > MAX_PARAM_ELEMENTS:
                problems.append(Problem(draft.path, f"params have more than {MAX_PARAM_ELEMENTS} elements in all"))
                return None
    observes = [o for name, dist in sections.observes.items()
                if (o := _observe(name, dist, checker, data, problems)) is not None]
    factors = []
    for name, term in sections.factors.items():
        shape = checker.check(term, f"factor.{name}", problems) if term is not None else None
        if term is not None and shape is not None:
            factors.append(Factor(name, term, shape))
    _check_unnamed_dims(nodes, observes, coords, problems)
    if problems:
        return None
    return Model(data=data, coords=coords, nodes=tuple(nodes), observes=tuple(observes), factors=tuple(factors))


def _check_unnamed_dims(nodes: list[Param | Define], observes: list[Observe], coords: dict[str, list[Any]],
                        problems: list[Problem]) -> None:
    """A coordinate named like an unnamed dimension (`theta_dim_0`, `y_dim_0` of observed data) labels it, so it
    must have its size: xarray refused the mismatch when the results were assembled, after sampling."""
    variables = [(n.output, n.dims, n.shape) for n in nodes]
    variables += [(o.name, tuple(f"{o.name}_dim_{i}" for i in range(len(o.shape))), o.shape) for o in observes]
    for owner, dims, shape in variables:
        for dim, size in zip(dims, shape, strict=True):
            if dim in coords and len(coords[dim]) != size:
                problems.append(Problem(f"coords.{dim}", f"names dimension {dim} of {owner!r}, of size {size}, but has "
                                                         f"{len(coords[dim])} labels"))


def dist_shape(draft: DistDraft, checker: ShapeChecker, data: dict[str, np.ndarray],
               problems: list[Problem]) -> tuple[DistCall, Shape, Shape] | None:
    """Check a bound distribution: (call, batch shape, event shape), or None after a problem."""
    info = draft.info
    shapes: dict[str, Shape] = {}
    static: dict[str, int] = {}
    ok = True
    for pname, node in draft.args.items():
        if info.constraints.get(pname) == "dimension":
            value = static_int(node, checker)
            if value is None or value < 2:
                problems.append(Problem(draft.path, f"{draft.name}: {pname} must be an integer >= 2 (literal or "
                                                    "integer scalar data)"))
                ok = False
            else:
                static[pname] = value
            continue
        shape = checker.check(node, draft.path, problems)
        if shape is None:
            ok = False
            continue
        shapes[pname] = shape
        # a value problem, not a shape problem: dependents can still be checked
        support.check_argument(draft, pname, node, data, problems)
    nested: dict[str, tuple[DistCall, Shape, Shape]] = {}
    for pname, inner in draft.nested.items():
        resolved = dist_shape(inner, checker, data, problems)
        if resolved is None:
            ok = False
        else:
            nested[pname] = resolved
    if not ok:
        return None
    try:
        if info.event is Event.MIXTURE:
            batch, event = _mixture_shapes(draft, nested, checker)
        else:
            batch, event = event_shapes(info.event, shapes, static)
    except ShapeError as exc:
        problems.append(Problem(draft.path, f"{draft.name}: {exc}"))
        return None
    args = tuple((k, v) for k, v in draft.args.items() if k not in static)
    calls = tuple((k, call) for k, (call, _, _) in nested.items())
    return DistCall(draft.name, args, tuple(static.items()), event, calls), batch, event


def _mixture_shapes(draft: DistDraft, nested: dict[str, tuple[DistCall, Shape, Shape]],
                    checker: ShapeChecker) -> tuple[Shape, Shape]:
    """A mixture of K components: the mixing Categorical's probs end in K, and the component's batch in K (the
    mixture's batch is the rest of both, broadcast) or K components are given (the mixture's batch is all their
    batches and the mixing's, broadcast). The event is the components'."""
    _, mixing_batch, _ = nested["mixing_distribution"]
    mixing = draft.nested["mixing_distribution"]
    weights = mixing.args.get("probs", mixing.args.get("logits"))
    assert weights is not None  # one_of checked when bound
    k = checker.shape(weights)[-1]
    if draft.info.variadic:  # MixtureGeneral: k components of one event shape, batches broadcast with the mixing's
        components = [nested[key] for key in nested if key != "mixing_distribution"]
        if len(components) != k:
            raise ShapeError(f"the mixing distribution weighs {k} components, {len(components)} are given")
        events = {event for _, _, event in components}
        if len(events) > 1:
            raise ShapeError(f"the components' event shapes differ: {sorted(events)}")
        return broadcast(mixing_batch, *(batch for _, batch, _ in components)), components[0][2]
    _, component_batch, component_event = nested["component_distribution"]
    if not component_batch or component_batch[-1] != k:
        raise ShapeError(f"the component distribution's batch shape {component_batch} must end in the {k} "
                         "components the mixing distribution weighs")
    return broadcast(mixing_batch, component_batch[:-1]), component_event


def event_shapes(event: Event, shapes: dict[str, Shape], static: dict[str, int]) -> tuple[Shape, Shape]:
    """(batch shape, event shape) of a distribution from its arguments' shapes; ShapeError if they disagree."""
    match event:
        case Event.SCALAR:
            return broadcast(*shapes.values()), ()
        case Event.CATEGORICAL:
            probs = shapes.get("probs", shapes.get("logits", ()))
            if not probs:
                raise ShapeError("probs/logits must be a vector (one entry per category)")
            return probs[:-1], ()
        case Event.SIMPLEX:
            conc = shapes["concentration"]
            if not conc or conc[-1] < 2:
                raise ShapeError("concentration must be a vector of length >= 2")
            return conc[:-1], conc[-1:]
        case Event.MVN:
            mat = next(shapes[k] for k in ("covariance_matrix", "precision_matrix", "scale_tril") if k in shapes)
            if len(mat) < 2 or mat[-1] != mat[-2]:
                raise ShapeError(f"the matrix argument must be square, got shape {mat}")
            loc = shapes.get("loc", ())
            if loc and loc[-1] != mat[-1]:
                raise ShapeError(f"loc has length {loc[-1]}, the matrix is {mat[-1]}x{mat[-1]}")
            return broadcast(loc[:-1], mat[:-2]), mat[-1:]
        case Event.LKJ:
            d = static["dimension"]
            return broadcast(*shapes.values()), (d, d)
        case Event.LOW_RANK_MVN:
            loc, factor, diag = shapes["loc"], shapes["cov_factor"], shapes["cov_diag"]
            if len(factor) < 2:
                raise ShapeError(f"cov_factor must be a (k, r) matrix, got shape {factor}")
            k = factor[-2]
            if (loc and loc[-1] != k) or (diag and diag[-1] != k):
                raise ShapeError(f"loc {loc} and cov_diag {diag} must end in k = {k}, cov_factor's rows")
            return broadcast(loc[:-1], factor[:-2], diag[:-1]), (k,)
        case Event.RANDOM_WALK:
            return shapes.get("scale", ()), (static["num_steps"],)
    raise ShapeError(f"unknown event rule {event}")


def static_int(node: Any, checker: ShapeChecker) -> int | None:
    """An integer known before sampling: a literal, or integer scalar data (by name or parsed)."""
    if isinstance(node, bool):
        return None
    if isinstance(node, int):
        return node
    if isinstance(node, str):
        try:
            node = expr.parse(node, "")
        except SpecError:
            return None
    if isinstance(node, Num) and isinstance(node.value, int):
        return node.value
    if isinstance(node, Name):
        sym = checker.symbols.get(node.id)
        if sym is not None and sym.kind == "data" and sym.values is not None and sym.values.ndim == 0 \
                and np.issubdtype(sym.values.dtype, np.integer):
            return int(sym.values)
    return None


def _param(draft: ParamDraft, checker: ShapeChecker, coords: dict[str, list[Any]], data: dict[str, np.ndarray],
           problems: list[Problem]) -> Param | None:
    if draft.dist is None:
        return None
    if draft.dist.discrete:
        problems.append(Problem(draft.dist.path, f"{draft.dist.name} is discrete; NUTS samples continuous params "
                                                 "only (observe discrete data, or marginalise discrete unknowns)"))
        return None
    resolved = dist_shape(draft.dist, checker, data, problems)
    ok, declared = _declared_shape(draft.dims, draft.shape, draft.path, coords, checker, problems)
    if resolved is None or not ok:
        return None
    call, batch, event = resolved
    if declared is not None and math.prod(declared) > MAX_PARAM_ELEMENTS:
        problems.append(Problem(draft.path, f"declared shape {declared} has {math.prod(declared)} elements; params "
                                            f"have at most {MAX_PARAM_ELEMENTS} in all"))
        return None
    if declared is None:
        full = batch + event
    else:
        full = declared
        if event and full[len(full) - len(event):] != event:
            problems.append(Problem(draft.path, f"shape mismatch: {draft.dist.name} draws have event shape "
                                                f"{event}, declared shape is {full}"))
            return None
        try:
            ok = broadcast(batch, full[: len(full) - len(event)]) == full[: len(full) - len(event)]
        except ShapeError:
            ok = False
        if not ok:
            problems.append(Problem(draft.path, f"shape mismatch: distribution arguments have shape {batch}, "
                                                f"declared shape is {full}"))
            return None
    dims = tuple(draft.dims) if draft.dims else tuple(f"{draft.name}_dim_{i}" for i in range(len(full)))
    return Param(draft.name, call, full, full[: len(full) - len(event)], dims, draft.noncentered, draft.label,
                 draft.keep)


def _define(draft: DefineDraft, checker: ShapeChecker, coords: dict[str, list[Any]],
            problems: list[Problem]) -> Define | None:
    if draft.node is None:
        return None
    shape = checker.check(draft.node, draft.where, problems)
    if shape is None:
        return None
    if draft.dims is not None:
        ok, declared = _declared_shape(draft.dims, None, draft.path, coords, checker, problems)
        if not ok:
            return None
        if declared != shape:
            problems.append(Problem(draft.path, f"shape mismatch: expression has shape {shape}, dims give "
                                                f"{declared}"))
            return None
    dims = tuple(draft.dims) if draft.dims else tuple(f"{draft.name}_dim_{i}" for i in range(len(shape)))
    return Define(draft.name, draft.node, shape, dims, draft.label, draft.keep)


def _observe(name: str, dist: DistDraft | None, checker: ShapeChecker, data: dict[str, np.ndarray],
             problems: list[Problem]) -> Observe | None:
    if name not in data:
        kind = checker.symbols[name].kind if name in checker.symbols else "unknown name"
        problems.append(Problem(f"observe.{name}", f"{name!r} is not a data variable ({kind}); observe names data "
                                                   "to model"))
        return None
    if dist is None:
        return None
    resolved = dist_shape(dist, checker, data, problems)
    if resolved is None:
        return None
    call, batch, event = resolved
    shape = data[name].shape
    try:
        ok = broadcast(batch + event, shape) == shape
    except ShapeError:
        ok = False
    if not ok or (event and shape[len(shape) - len(event):] != event):
        problems.append(Problem(dist.path, f"shape mismatch: distribution has shape {batch + event}, data {name!r} "
                                           f"have shape {shape}"))
        return None
    support.check_observed(dist, data[name], data, f"data.{name}", problems)
    return Observe(name, call, shape, shape[: len(shape) - len(event)])


def _declared_shape(dims: list[str] | None, shape: list[Any] | None, path: str, coords: dict[str, list[Any]],
                    checker: ShapeChecker, problems: list[Problem]) -> tuple[bool, Shape | None]:
    """(ok, the shape given by dims or shape, or None if neither)."""
    given = dims if dims is not None else shape
    if given is not None and len(given) > MAX_DIMS:
        field = "dims" if dims is not None else "shape"
        problems.append(Problem(f"{path}.{field}", f"{len(given)} dimensions; at most {MAX_DIMS} are allowed"))
        return False, None
    if dims is not None:
        twice = sorted({d for d in dims if dims.count(d) > 1})
        if twice:
            problems.append(Problem(f"{path}.dims", f"{', '.join(twice)} given twice; a variable's dimensions must be "
                                                    "distinct (netCDF cannot store one dimension twice): add a coord"))
            return False, None
        unknown = [d for d in dims if d not in coords]
        if unknown:
            problems.append(Problem(f"{path}.dims", f"unknown coordinate(s) {', '.join(unknown)}; define them under "
                                                    "coords"))
            return False, None
        return True, tuple(len(coords[d]) for d in dims)
    if shape is None:
        return True, None
    sizes: list[int] = []
    for i, entry in enumerate(shape):
        size = static_int(entry, checker)
        if size is None or size < 1:
            problems.append(Problem(f"{path}.shape[{i}]", "must be a positive integer or the name of positive "
                                                          "integer scalar data"))
            return False, None
        sizes.append(size)
    return True, tuple(sizes)
