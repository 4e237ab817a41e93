"""Reading a graph spec's sections into drafts: fields checked, expressions parsed, distributions bound.

A draft is a node as the user wrote it, read but not resolved: its name is not
checked yet, the order is the user's and shapes are unknown (names.py and
resolve.py take it from here). Data go through data.py.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.exceptions import Problem, SpecError
from service.language import expr
from service.language.catalog import DISTRIBUTIONS, FUNCTIONS, LOC_SCALE, MAX_COMPONENTS, MIXING, DistInfo
from service.language.data import arrays
from service.language.expr import Call, Node
from service.language.text import MAX_LABEL_CHARS, label_problem

TOP_KEYS = ("spec", "data", "coords", "params", "define", "observe", "factor", "fitted_priors", "name", "description")
PARAM_KEYS = ("dist", "dims", "shape", "reparam", "label", "keep")
DEFINE_KEYS = ("expr", "dims", "label", "keep")
MAX_NAMES = 2_000
"""Entries per section."""
LABEL_RE = re.compile(r"^[^\x00-\x1f\x7f-\x9f\ud800-\udfff/\\]{1,128}$")
"""Labels name variables in the draws (`1|county`): printable, no slashes (netCDF paths)."""
MAX_INT_LABEL = 2**53
"""Largest integer coordinate label: beyond it netCDF cannot store the label (2**70 crashed the writer)."""
MAX_MODEL_NAME_CHARS = 200
"""Longest model `name` (it labels the job's metrics)."""
MAX_DESCRIPTION_CHARS = 10_000


@dataclass(frozen=True)
class DistDraft:
    """A distribution call bound to its catalog entry."""

    name: str
    info: DistInfo
    args: dict[str, Node]
    """Arguments by numpyro's parameter names, positional ones included."""
    path: str
    nested: dict[str, DistDraft] = field(default_factory=dict)
    """Arguments that are distributions (info.nested), bound in turn."""

    @property
    def components(self) -> list[DistDraft]:
        """A mixture's component distributions (one for MixtureSameFamily); none for other distributions."""
        return [d for key, d in self.nested.items() if key != "mixing_distribution"]

    @property
    def discrete(self) -> bool:
        """Draws are integers: the distribution's own, or a mixture's components'."""
        return self.info.discrete or any(c.discrete for c in self.components)


@dataclass(frozen=True)
class ParamDraft:
    name: str
    dist: DistDraft | None
    """None after a problem with the distribution (reported)."""
    dims: list[str] | None
    shape: list[Any] | None
    """Sizes as written: integers, or names of integer scalar data."""
    noncentered: bool
    path: str
    label: str = ""
    keep: bool = True


@dataclass(frozen=True)
class DefineDraft:
    name: str
    node: Node | None
    """The parsed expression; None after a problem with it (reported)."""
    dims: list[str] | None
    path: str
    """The define's field: `define.x` (its dims and label are `define.x.dims`, `define.x.label`)."""
    label: str = ""
    keep: bool = True
    expr_path: str = ""
    """Where the expression is when that differs from `path`: `define.x.expr` in the long form."""

    @property
    def where(self) -> str:
        """The path of the expression."""
        return self.expr_path or self.path


Draft = ParamDraft | DefineDraft


@dataclass(frozen=True)
class Sections:
    """A graph spec read section by section; what could not be read is left out, its problem recorded."""

    data: dict[str, np.ndarray]
    coords: dict[str, list[Any]]
    params: list[ParamDraft]
    defines: list[DefineDraft]
    observes: dict[str, DistDraft | None]
    """By data name; None where the distribution had a problem, so the name is still checked."""
    factors: dict[str, Node | None] = field(default_factory=dict)
    """Terms added to the log density (Stan's `target +=`), summed; None where the expression had a problem."""

    @property
    def drafts(self) -> list[Draft]:
        return [*self.params, *self.defines]


def read(doc: Mapping[str, Any], problems: list[Problem]) -> Sections:
    """Read every section of a graph spec (its version already checked)."""
    for key in doc:
        if key not in TOP_KEYS:
            problems.append(Problem(str(key), f"unknown section; expected one of {', '.join(TOP_KEYS)}"))
    about(doc, problems)
    data = arrays(_section(doc, "data", problems), problems)
    coords = _coords(_section(doc, "coords", problems), problems)
    params = [_param(str(k), v, problems) for k, v in _section(doc, "params", problems).items()]
    defines = [_define(str(k), v, problems) for k, v in _section(doc, "define", problems).items()]
    observes = {str(k): _observe(str(k), v, problems) for k, v in _section(doc, "observe", problems).items()}
    factors = {str(k): _factor(str(k), v, problems) for k, v in _section(doc, "factor", problems).items()}
    if not params:
        problems.append(Problem("params", "a model needs at least one param to sample"))
    return Sections(data, coords, params, defines, observes, factors)


def _factor(name: str, raw: Any, problems: list[Problem]) -> Node | None:
    path = f"factor.{name}"
    try:
        node = expr.parse(raw, path)
    except SpecError as exc:
        problems += exc.problems
        return None
    if isinstance(node, Call) and node.func in DISTRIBUTIONS:
        problems.append(Problem(path, f"{node.func} is a distribution; a factor is an expression whose sum is added "
                                      "to the log density"))
        return None
    return node


def dist(raw: Any, path: str, problems: list[Problem]) -> DistDraft | None:
    """Parse a distribution call and bind its arguments to the catalog's parameter names."""
    try:
        node = expr.parse(raw, path)
    except SpecError as exc:
        problems += exc.problems
        return None
    return _bind(node, path, problems, nested_ok=True)


def _bind(node: Node, path: str, problems: list[Problem], *, nested_ok: bool) -> DistDraft | None:
    if not isinstance(node, Call):
        problems.append(Problem(path, f"expected a distribution such as Normal(0, 1), got "
                                      f"{expr.to_text(node)!r:.60}"))
        return None
    info = DISTRIBUTIONS.get(node.func)
    if info is None:
        hint = difflib.get_close_matches(node.func, DISTRIBUTIONS, n=1)
        where = "a function, not a distribution" if node.func in FUNCTIONS else "unknown distribution"
        problems.append(Problem(path, f"{where} {node.func!r}" + (f"; did you mean {hint[0]}?" if hint else "")))
        return None
    if info.nested and not nested_ok:
        problems.append(Problem(path, f"{node.func} cannot be nested in another distribution"))
        return None
    fixed = info.params[:-1] if info.variadic else info.params
    if len(node.args) > len(fixed) and not info.variadic:
        problems.append(Problem(path, f"{node.func} takes at most {len(info.params)} positional argument(s) "
                                      f"({', '.join(info.params)}), got {len(node.args)}"))
        return None
    args: dict[str, Node] = dict(zip(fixed, node.args, strict=False))
    for key, value in node.kwargs:
        if key == info.variadic:
            problems.append(Problem(path, f"{node.func} takes its components as further arguments, e.g. "
                                          f"{node.func}(Categorical(w), Normal(0, 1), StudentT(3, 0, 1))"))
            return None
        if key not in info.params:
            problems.append(Problem(path, f"{node.func} has no argument {key!r}; its arguments are "
                                          f"{', '.join(info.params)}"))
            return None
        if key in args:
            problems.append(Problem(path, f"{node.func}: argument {key!r} given twice"))
            return None
        args[key] = value
    missing = sorted(info.required - set(args))
    if missing:
        problems.append(Problem(path, f"{node.func} needs argument(s) {', '.join(missing)}"))
        return None
    if info.one_of and sum(k in args for k in info.one_of) != 1:
        problems.append(Problem(path, f"{node.func} needs exactly one of {', '.join(info.one_of)}"))
        return None
    nested: dict[str, DistDraft] = {}
    for key in sorted(info.nested & set(args)):
        inner = _bind(args.pop(key), f"{path}.{key}", problems, nested_ok=False)
        if inner is None:
            return None
        nested[key] = inner
    mixing = nested.get("mixing_distribution")
    if mixing is not None and mixing.name not in MIXING:
        problems.append(Problem(f"{path}.mixing_distribution", f"the components are mixed by one of "
                                                               f"{', '.join(MIXING)}, not {mixing.name}"))
        return None
    if info.variadic:
        components = _components(node, info.variadic, node.args[len(fixed):], path, problems)
        if components is None:
            return None
        nested.update(components)
    return DistDraft(node.func, info, args, path, nested)


def _components(node: Call, name: str, given: tuple[Node, ...], path: str,
                problems: list[Problem]) -> dict[str, DistDraft] | None:
    """A MixtureGeneral's components (its positional arguments after the mixing distribution), bound as
    `name.0`, `name.1`, ...; they must share one support, which is the mixture's."""
    if not 2 <= len(given) <= MAX_COMPONENTS:
        problems.append(Problem(path, f"{node.func} needs 2 to {MAX_COMPONENTS} component distributions after the "
                                      f"mixing distribution, got {len(given)}"))
        return None
    bound: dict[str, DistDraft] = {}
    for i, arg in enumerate(given):
        inner = _bind(arg, f"{path}.{name}.{i}", problems, nested_ok=False)
        if inner is None:
            return None
        bound[f"{name}.{i}"] = inner
    supports = {d.name: COMPONENT_SUPPORTS.get(d.info.support) for d in bound.values()}
    if None in supports.values() or len(set(supports.values())) > 1:
        listed = ", ".join(f"{d.name} ({d.info.support})" for d in bound.values())
        problems.append(Problem(path, f"{node.func}'s components must share one support (real, positive, counts, "
                                      f"...; not bounds set by arguments, as Uniform's), got {listed}"))
        return None
    return bound


COMPONENT_SUPPORTS = {"real": "real", "positive": "positive", "nonnegative": "positive", "unit": "unit",
                      "binary": "binary", "count": "count", "bounded_count": "bounded_count", "simplex": "simplex"}
"""Supports a MixtureGeneral's components may have, by the class numpyro checks them in: components of one class
mix (a HalfNormal and a Gamma are both positive)."""


def _section(doc: Mapping[str, Any], key: str, problems: list[Problem]) -> Mapping[Any, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(Problem(key, f"must be a mapping of names, got {type(value).__name__}"))
        return {}
    if len(value) > MAX_NAMES:
        problems.append(Problem(key, f"more than {MAX_NAMES} entries"))
        return {}
    return value


def about(doc: Mapping[str, Any], problems: list[Problem]) -> None:
    """The model's `name` (a metrics label: short, no control characters) and free-text `description`, for
    either front end."""
    name = doc.get("name")
    if name is not None:
        if not isinstance(name, str) or not name:
            problems.append(Problem("name", "must be a non-empty string"))
        elif (problem := label_problem(name, max_chars=MAX_MODEL_NAME_CHARS)) is not None:
            problems.append(Problem("name", problem))
    description = doc.get("description")
    if description is not None:
        if not isinstance(description, str):
            problems.append(Problem("description", "must be a string"))
        elif (problem := label_problem(description.replace("\n", " ").replace("\t", " ").replace("\r", " "),
                                       max_chars=MAX_DESCRIPTION_CHARS)) is not None:
            problems.append(Problem("description", problem))


def _coords(raw: Mapping[Any, Any], problems: list[Problem]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for key, labels in raw.items():
        path = f"coords.{key}"
        if not isinstance(labels, list) or not labels:
            problems.append(Problem(path, "must be a non-empty list of labels"))
            continue
        if not all(isinstance(x, str | int | float) and not isinstance(x, bool) for x in labels):
            problems.append(Problem(path, "labels must be strings or numbers"))
            continue
        bad = _label_problem(labels)
        if bad is not None:
            problems.append(Problem(path + bad[0], bad[1]))
            continue
        if len(set(labels)) != len(labels):
            problems.append(Problem(path, "labels must be unique"))
            continue
        out[str(key)] = list(labels)
    return out


def _label_problem(labels: list[str | int | float]) -> tuple[str, str] | None:
    """(index suffix of the path, message) for the first label netCDF cannot store as given, or None.

    All strings or all numbers: a mixed list is stored as strings (`1` comes back as "1", and [1, "1"] crashed
    the writer); numbers must be finite (NaN is not equal to itself, so it is no label) and integers within
    MAX_INT_LABEL; strings as label_problem says.
    """
    if any(isinstance(x, str) for x in labels) and not all(isinstance(x, str) for x in labels):
        return "", "labels must be all strings or all numbers"
    for i, label in enumerate(labels):
        if isinstance(label, str):
            problem = label_problem(label, max_chars=MAX_LABEL_CHARS)
            if problem is not None:
                return f"[{i}]", f"the label {problem}"
        elif isinstance(label, float) and not math.isfinite(label):
            return f"[{i}]", "a numeric label must be finite"
        elif isinstance(label, int) and abs(label) > MAX_INT_LABEL:
            return f"[{i}]", f"an integer label must be within +-2**53, got {label:.3g}"
    return None


def _param(name: str, raw: Any, problems: list[Problem]) -> ParamDraft:
    path = f"params.{name}"
    if not isinstance(raw, Mapping):
        return ParamDraft(name, dist(raw, path, problems), None, None, False, path)
    for key in raw:
        if key not in PARAM_KEYS:
            problems.append(Problem(f"{path}.{key}", f"unknown field; expected one of {', '.join(PARAM_KEYS)}"))
    dims = _name_list(raw.get("dims"), f"{path}.dims", problems)
    shape = raw.get("shape")
    if shape is not None and not isinstance(shape, list):
        problems.append(Problem(f"{path}.shape", "must be a list of sizes (integers or integer data names)"))
        shape = None
    if dims is not None and shape is not None:
        problems.append(Problem(path, "give dims or shape, not both"))
    reparam = raw.get("reparam")
    if reparam not in (None, "noncentered", "centered"):
        problems.append(Problem(f"{path}.reparam", f"unknown reparam {reparam!r}; use noncentered or centered"))
    label, keep = _label_keep(raw, path, problems)
    if "dist" not in raw:
        problems.append(Problem(f"{path}.dist", "missing"))
        return ParamDraft(name, None, dims, shape, False, path)
    bound = dist(raw["dist"], f"{path}.dist", problems)
    if reparam == "noncentered" and bound is not None and not bound.info.loc_scale:
        problems.append(Problem(f"{path}.reparam", f"noncentered needs a location-scale distribution "
                                                   f"({', '.join(LOC_SCALE)}), got {bound.name}"))
    return ParamDraft(name, bound, dims, shape, reparam == "noncentered", path, label, keep)


def _define(name: str, raw: Any, problems: list[Problem]) -> DefineDraft:
    path = f"define.{name}"
    dims = None
    label, keep = "", True
    if isinstance(raw, Mapping):
        for key in raw:
            if key not in DEFINE_KEYS:
                problems.append(Problem(f"{path}.{key}", f"unknown field; expected one of {', '.join(DEFINE_KEYS)}"))
        dims = _name_list(raw.get("dims"), f"{path}.dims", problems)
        label, keep = _label_keep(raw, path, problems)
        expr_path, raw = f"{path}.expr", raw.get("expr")
    else:
        expr_path = path
    try:
        node = expr.parse(raw, expr_path)
    except SpecError as exc:
        problems += exc.problems
        return DefineDraft(name, None, dims, path, label, keep, expr_path)
    if isinstance(node, Call) and node.func in DISTRIBUTIONS:
        problems.append(Problem(expr_path, f"{node.func} is a distribution; random variables belong under params"))
        return DefineDraft(name, None, dims, path, label, keep, expr_path)
    return DefineDraft(name, node, dims, path, label, keep, expr_path)


def _observe(name: str, raw: Any, problems: list[Problem]) -> DistDraft | None:
    path = f"observe.{name}"
    if isinstance(raw, Mapping):
        for key in raw:
            if key != "dist":
                problems.append(Problem(f"{path}.{key}", "unknown field; expected dist"))
        path, raw = f"{path}.dist", raw.get("dist")
    return dist(raw, path, problems)


def _label_keep(raw: Mapping[str, Any], path: str, problems: list[Problem]) -> tuple[str, bool]:
    label = raw.get("label", "")
    if not isinstance(label, str) or (label and not LABEL_RE.match(label)):
        problems.append(Problem(f"{path}.label", "a label is 1-128 printable characters without slashes"))
        label = ""
    keep = raw.get("keep", True)
    if not isinstance(keep, bool):
        problems.append(Problem(f"{path}.keep", "must be true or false"))
        keep = True
    return label, keep


def _name_list(raw: Any, path: str, problems: list[Problem]) -> list[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        problems.append(Problem(path, "must be a list of coordinate names"))
        return None
    return list(raw)
