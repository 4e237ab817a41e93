"""Graph spec v1 -> validated Model. Collects every problem, each with its field path.

Stages: read the sections (data, coords, params, define, observe), check names,
order the nodes by dependency (cycles are errors), then infer every shape and
check indices, constraints and supports against the data. Nothing here imports
JAX; the API runs this before queueing anything.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.exceptions import Problem, SpecError
from service.language import expr
from service.language.catalog import DISTRIBUTIONS, FUNCTIONS, LOC_SCALE, DistInfo, Event
from service.language.expr import Call, Name, Node, Num
from service.language.ir import Define, DistCall, Model, Observe, Param, Shape
from service.language.shapes import ShapeChecker, ShapeError, Symbol, broadcast

SPEC_VERSION = 1
MAX_DATA_ELEMENTS = 20_000_000
"""Total numbers in `data`; about 160 MB as float64."""
MAX_PARAM_ELEMENTS = 200_000
"""Total elements of all params: the dimension NUTS works in."""
MAX_DATA_DIMS = 8
MAX_NAMES = 2_000
RESERVED = frozenset({"chain", "draw"})
COORD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_:]{0,127}$")
"""Dimension names; `:` allowed for nested factors (`region:hospital`)."""
"""ArviZ's own dimension names."""

TOP_KEYS = ("spec", "data", "coords", "params", "define", "observe", "name", "description")
PARAM_KEYS = ("dist", "dims", "shape", "reparam", "label", "keep")
DEFINE_KEYS = ("expr", "dims", "label", "keep")
LABEL_RE = re.compile(r"^[^\x00-\x1f/\\]{1,128}$")
"""Labels name variables in the draws (`1|county`): printable, no slashes (netCDF paths)."""


@dataclass
class _DistDraft:
    name: str
    info: DistInfo
    args: dict[str, Node]
    path: str


@dataclass
class _ParamDraft:
    name: str
    dist: _DistDraft | None
    dims: list[str] | None
    shape: list[Any] | None
    noncentered: bool
    path: str
    label: str = ""
    keep: bool = True


@dataclass
class _DefineDraft:
    name: str
    node: Node | None
    dims: list[str] | None
    path: str
    label: str = ""
    keep: bool = True


def validate(doc: Any) -> Model:
    """Validate a model spec (graph or formula front end; already parsed from YAML/JSON)."""
    return _Validator().run(doc)


def _from_formula(doc: Mapping[str, Any]) -> Model:
    """Compile a formula spec to a graph spec and validate that; problems point at the user's fields."""
    from service.language.formula import compile_formula

    graph = compile_formula(doc)
    try:
        model = _Validator().run(graph)
    except SpecError as exc:
        labels = {f"params.{k}": f"priors.{v.get('label', k)}" for k, v in graph["params"].items()
                  if isinstance(v, Mapping)}
        raise SpecError([Problem(labels.get(".".join(p.path.split(".")[:2]), p.path), p.message)
                         for p in exc.problems]) from None
    return model


class _Validator:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def run(self, doc: Any) -> Model:
        if not isinstance(doc, Mapping):
            raise SpecError([Problem("", f"a model spec is a mapping with `spec: {SPEC_VERSION}`, "
                                         f"got {type(doc).__name__}")])
        version = doc.get("spec")
        if "spec" not in doc:
            raise SpecError([Problem("spec", f"missing: add `spec: {SPEC_VERSION}` (the model language version)")])
        if isinstance(version, bool) or version != SPEC_VERSION:
            raise SpecError([Problem("spec", f"unsupported version {version!r}; this server reads version "
                                             f"{SPEC_VERSION}")])
        if "formula" in doc:
            return _from_formula(doc)
        for key in doc:
            if key not in TOP_KEYS:
                self.problem(str(key), f"unknown section; expected one of {', '.join(TOP_KEYS)}")

        data = self._data(self._mapping(doc, "data"))
        coords = self._coords(self._mapping(doc, "coords"))
        params = [self._param(str(k), v) for k, v in self._mapping(doc, "params").items()]
        defines = [self._define(str(k), v) for k, v in self._mapping(doc, "define").items()]
        observes = {str(k): self._observe(str(k), v) for k, v in self._mapping(doc, "observe").items()}
        if not params:
            self.problem("params", "a model needs at least one param to sample")
        self._check_names(data, coords, params, defines)
        ordered = self._order(params, defines)
        drafts: list[_ParamDraft | _DefineDraft] = [*params, *defines]
        in_cycles = {d.name for d in drafts} - {d.name for d in ordered}
        model = self._resolve(data, coords, ordered, observes, in_cycles)
        if self.problems:
            raise SpecError(self.problems)
        assert model is not None
        return model

    # -- sections ---------------------------------------------------------------------------------

    def _mapping(self, doc: Mapping[str, Any], key: str) -> Mapping[Any, Any]:
        value = doc.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(key, f"must be a mapping of names, got {type(value).__name__}")
            return {}
        if len(value) > MAX_NAMES:
            self.problem(key, f"more than {MAX_NAMES} entries")
            return {}
        return value

    def _data(self, raw: Mapping[Any, Any]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        total = 0
        for key, value in raw.items():
            path = f"data.{key}"
            array = self._array(value, path)
            if array is None:
                continue
            total += array.size
            if total > MAX_DATA_ELEMENTS:
                self.problem(path, f"data hold more than {MAX_DATA_ELEMENTS} numbers in all")
                break
            out[str(key)] = array
        return out

    def _array(self, value: Any, path: str) -> np.ndarray | None:
        if isinstance(value, str) or value is None:
            self.problem(path, f"must be a number or a (nested) list of numbers, got {value!r:.40}")
            return None
        try:
            array = np.array(value)
        except (ValueError, TypeError, RecursionError, OverflowError) as exc:
            msg = "nested lists must be rectangular" if "inhomogeneous" in str(exc) else "not an array of numbers"
            self.problem(path, msg)
            return None
        if array.ndim > MAX_DATA_DIMS:
            self.problem(path, f"has {array.ndim} dimensions; at most {MAX_DATA_DIMS} are allowed")
            return None
        if array.dtype.kind == "b":
            array = array.astype(np.int64)
        if array.dtype.kind in "iu":
            if array.size and (array.max() > 2**62 or array.min() < -(2**62)):
                self.problem(path, "integer too large")
                return None
            return array.astype(np.int64)
        if array.dtype.kind == "f":
            if not np.all(np.isfinite(array)):
                bad = np.argwhere(~np.isfinite(array))[0]
                where = f"[{', '.join(str(int(i)) for i in bad)}]" if array.ndim else ""
                self.problem(path + where, "NaN or infinite value; data must be finite numbers")
                return None
            return array.astype(np.float64)
        self.problem(path, "must be numbers (strings are only allowed in coords and, with a formula, as factors)")
        return None

    def _coords(self, raw: Mapping[Any, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for key, labels in raw.items():
            path = f"coords.{key}"
            if not isinstance(labels, list) or not labels:
                self.problem(path, "must be a non-empty list of labels")
                continue
            if not all(isinstance(x, str | int | float) and not isinstance(x, bool) for x in labels):
                self.problem(path, "labels must be strings or numbers")
                continue
            if len(set(labels)) != len(labels):
                self.problem(path, "labels must be unique")
                continue
            out[str(key)] = list(labels)
        return out

    def _param(self, name: str, raw: Any) -> _ParamDraft:
        path = f"params.{name}"
        if isinstance(raw, Mapping):
            for key in raw:
                if key not in PARAM_KEYS:
                    self.problem(f"{path}.{key}", f"unknown field; expected one of {', '.join(PARAM_KEYS)}")
            dims = self._name_list(raw.get("dims"), f"{path}.dims")
            shape = raw.get("shape")
            if shape is not None and not isinstance(shape, list):
                self.problem(f"{path}.shape", "must be a list of sizes (integers or integer data names)")
                shape = None
            if dims is not None and shape is not None:
                self.problem(path, "give dims or shape, not both")
            reparam = raw.get("reparam")
            if reparam not in (None, "noncentered", "centered"):
                self.problem(f"{path}.reparam", f"unknown reparam {reparam!r}; use noncentered or centered")
            label, keep = self._label_keep(raw, path)
            if "dist" not in raw:
                self.problem(f"{path}.dist", "missing")
                return _ParamDraft(name, None, dims, shape, False, path)
            dist = self._dist(raw["dist"], f"{path}.dist")
            if reparam == "noncentered" and dist is not None and not dist.info.loc_scale:
                self.problem(f"{path}.reparam", f"noncentered needs a location-scale distribution "
                                                f"({', '.join(LOC_SCALE)}), got {dist.name}")
            return _ParamDraft(name, dist, dims, shape, reparam == "noncentered", path, label, keep)
        return _ParamDraft(name, self._dist(raw, path), None, None, False, path)

    def _define(self, name: str, raw: Any) -> _DefineDraft:
        path = f"define.{name}"
        dims = None
        if isinstance(raw, Mapping):
            for key in raw:
                if key not in DEFINE_KEYS:
                    self.problem(f"{path}.{key}", f"unknown field; expected one of {', '.join(DEFINE_KEYS)}")
            dims = self._name_list(raw.get("dims"), f"{path}.dims")
            label, keep = self._label_keep(raw, path)
            path, raw = f"{path}.expr", raw.get("expr")
        else:
            label, keep = "", True
        try:
            node = expr.parse(raw, path)
        except SpecError as exc:
            self.problems += exc.problems
            return _DefineDraft(name, None, dims, path, label, keep)
        if isinstance(node, Call) and node.func in DISTRIBUTIONS:
            self.problem(path, f"{node.func} is a distribution; random variables belong under params")
            return _DefineDraft(name, None, dims, path, label, keep)
        return _DefineDraft(name, node, dims, path, label, keep)

    def _label_keep(self, raw: Mapping[str, Any], path: str) -> tuple[str, bool]:
        label = raw.get("label", "")
        if not isinstance(label, str) or (label and not LABEL_RE.match(label)):
            self.problem(f"{path}.label", "a label is 1-128 printable characters without slashes")
            label = ""
        keep = raw.get("keep", True)
        if not isinstance(keep, bool):
            self.problem(f"{path}.keep", "must be true or false")
            keep = True
        return label, keep

    def _observe(self, name: str, raw: Any) -> _DistDraft | None:
        path = f"observe.{name}"
        if isinstance(raw, Mapping):
            for key in raw:
                if key != "dist":
                    self.problem(f"{path}.{key}", "unknown field; expected dist")
            path, raw = f"{path}.dist", raw.get("dist")
        return self._dist(raw, path)

    def _name_list(self, raw: Any, path: str) -> list[str] | None:
        if raw is None:
            return None
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            self.problem(path, "must be a list of coordinate names")
            return None
        return list(raw)

    def _dist(self, raw: Any, path: str) -> _DistDraft | None:
        try:
            node = expr.parse(raw, path)
        except SpecError as exc:
            self.problems += exc.problems
            return None
        if not isinstance(node, Call):
            self.problem(path, f"expected a distribution such as Normal(0, 1), got {expr.to_text(node)!r:.60}")
            return None
        info = DISTRIBUTIONS.get(node.func)
        if info is None:
            hint = difflib.get_close_matches(node.func, DISTRIBUTIONS, n=1)
            where = "a function, not a distribution" if node.func in FUNCTIONS else "unknown distribution"
            self.problem(path, f"{where} {node.func!r}" + (f"; did you mean {hint[0]}?" if hint else ""))
            return None
        args: dict[str, Node] = {}
        if len(node.args) > len(info.params):
            self.problem(path, f"{node.func} takes at most {len(info.params)} positional argument(s) "
                               f"({', '.join(info.params)}), got {len(node.args)}")
            return None
        for pname, value in zip(info.params, node.args, strict=False):
            args[pname] = value
        for key, value in node.kwargs:
            if key not in info.params:
                self.problem(path, f"{node.func} has no argument {key!r}; its arguments are {', '.join(info.params)}")
                return None
            if key in args:
                self.problem(path, f"{node.func}: argument {key!r} given twice")
                return None
            args[key] = value
        missing = sorted(info.required - set(args))
        if missing:
            self.problem(path, f"{node.func} needs argument(s) {', '.join(missing)}")
            return None
        if info.one_of and sum(k in args for k in info.one_of) != 1:
            self.problem(path, f"{node.func} needs exactly one of {', '.join(info.one_of)}")
            return None
        return _DistDraft(node.func, info, args, path)

    # -- names and order --------------------------------------------------------------------------

    def _check_names(self, data: Mapping[str, Any], coords: Mapping[str, Any],
                     params: list[_ParamDraft], defines: list[_DefineDraft]) -> None:
        seen: dict[str, str] = {}
        entries: Iterable[tuple[str, str]] = (
            [(n, "data") for n in data] + [(p.name, "params") for p in params] + [(d.name, "define") for d in defines]
        )
        for name, section in entries:
            path = f"{section}.{name}"
            if not expr.NAME_RE.match(name):
                self.problem(path, "names use letters, digits and underscores and start with a letter (at most 64)")
            elif name in RESERVED or (section != "data" and name in coords):
                self.problem(path, f"name {name!r} is reserved for a dimension")
            if name in seen:
                self.problem(path, f"name {name!r} is already used in {seen[name]}")
            seen.setdefault(name, section)
        outputs: dict[str, str] = {}  # names in the draws: labels where given
        drafts: list[_ParamDraft | _DefineDraft] = [*params, *defines]
        for draft in drafts:
            out = draft.label or draft.name
            if draft.label and (out in RESERVED or out in coords):
                self.problem(f"{draft.path}.label", f"label {out!r} is reserved for a dimension")
            elif out in outputs:
                self.problem(f"{draft.path}.label" if draft.label else draft.path,
                             f"{out!r} already names {outputs[out]} in the draws")
            outputs.setdefault(out, draft.path)
        for name in coords:
            if name in RESERVED or not COORD_RE.match(name):
                self.problem(f"coords.{name}", "not a valid dimension name (chain and draw are ArviZ's own)")

    def _order(self, params: list[_ParamDraft], defines: list[_DefineDraft]) -> list[_ParamDraft | _DefineDraft]:
        """Dependency order (stable: declaration order where free); cycles are problems."""
        drafts: list[_ParamDraft | _DefineDraft] = [*params, *defines]
        nodes = {n.name: n for n in drafts}
        deps = {name: _dependencies(node) & nodes.keys() for name, node in nodes.items()}
        ordered: list[_ParamDraft | _DefineDraft] = []
        done: set[str] = set()
        while len(done) < len(nodes):
            ready = [n for n in nodes if n not in done and deps[n] <= done]
            if not ready:
                break
            ordered.append(nodes[ready[0]])
            done.add(ready[0])
        for cycle in _cycles({n: deps[n] for n in nodes if n not in done}):
            self.problem(nodes[cycle[0]].path, "cycle: " + " -> ".join([*cycle, cycle[0]]))
        return ordered

    # -- shapes, indices, constraints -------------------------------------------------------------

    def _resolve(self, data: dict[str, np.ndarray], coords: dict[str, list[Any]],
                 ordered: list[_ParamDraft | _DefineDraft], observes: dict[str, _DistDraft | None],
                 in_cycles: set[str]) -> Model | None:
        symbols = {name: Symbol("data", value.shape, value) for name, value in data.items()}
        symbols.update({name: Symbol("param", None) for name in in_cycles})  # reported as cycles already
        checker = ShapeChecker(symbols)
        nodes: list[Param | Define] = []
        total = 0
        for draft in ordered:
            node = self._param_ir(draft, checker, coords, data) if isinstance(draft, _ParamDraft) else \
                self._define_ir(draft, checker, coords)
            if node is None:
                symbols[draft.name] = Symbol("param" if isinstance(draft, _ParamDraft) else "define", None)
                continue
            nodes.append(node)
            symbols[node.name] = Symbol("param" if isinstance(node, Param) else "define", node.shape)
            if isinstance(node, Param):
                total += int(np.prod(node.shape))
                if total > MAX_PARAM_ELEMENTS:
                    self.problem(draft.path, f"params have more than {MAX_PARAM_ELEMENTS} elements in all")
                    return None
        obs: list[Observe] = []
        for name, dist in observes.items():
            path = f"observe.{name}"
            if name not in data:
                kind = symbols[name].kind if name in symbols else "unknown name"
                self.problem(path, f"{name!r} is not a data variable ({kind}); observe names data to model")
                continue
            if dist is None:
                continue
            resolved = self._dist_shape(dist, checker, data)
            if resolved is None:
                continue
            call, batch, event = resolved
            shape = data[name].shape
            try:
                ok = broadcast(batch + event, shape) == shape
            except ShapeError:
                ok = False
            if not ok or (event and shape[len(shape) - len(event):] != event):
                self.problem(dist.path, f"shape mismatch: distribution has shape {batch + event}, data {name!r} "
                                        f"have shape {shape}")
                continue
            self._check_support(dist, data[name], data, f"data.{name}")
            obs.append(Observe(name, call, shape, shape[: len(shape) - len(event)]))
        if self.problems:
            return None
        return Model(data=data, coords=coords, nodes=tuple(nodes), observes=tuple(obs))

    def _param_ir(self, draft: _ParamDraft, checker: ShapeChecker, coords: dict[str, list[Any]],
                  data: dict[str, np.ndarray]) -> Param | None:
        if draft.dist is None:
            return None
        if draft.dist.info.discrete:
            self.problem(draft.dist.path, f"{draft.dist.name} is discrete; NUTS samples continuous params only "
                                          "(observe discrete data, or marginalise discrete unknowns)")
            return None
        resolved = self._dist_shape(draft.dist, checker, data)
        ok, declared = self._declared_shape(draft.dims, draft.shape, draft.path, coords, checker)
        if resolved is None or not ok:
            return None
        call, batch, event = resolved
        if declared is None:
            full = batch + event
        else:
            full = declared
            if event and full[len(full) - len(event):] != event:
                self.problem(draft.path, f"shape mismatch: {draft.dist.name} draws have event shape {event}, "
                                         f"declared shape is {full}")
                return None
            try:
                ok = broadcast(batch, full[: len(full) - len(event)]) == full[: len(full) - len(event)]
            except ShapeError:
                ok = False
            if not ok:
                self.problem(draft.path, f"shape mismatch: distribution arguments have shape {batch}, "
                                         f"declared shape is {full}")
                return None
        dims = tuple(draft.dims) if draft.dims else tuple(f"{draft.name}_dim_{i}" for i in range(len(full)))
        return Param(draft.name, call, full, full[: len(full) - len(event)], dims, draft.noncentered, draft.label,
                     draft.keep)

    def _define_ir(self, draft: _DefineDraft, checker: ShapeChecker, coords: dict[str, list[Any]]) -> Define | None:
        if draft.node is None:
            return None
        shape = checker.check(draft.node, draft.path, self.problems)
        if shape is None:
            return None
        if draft.dims is not None:
            ok, declared = self._declared_shape(draft.dims, None, draft.path, coords, checker)
            if not ok:
                return None
            if declared != shape:
                self.problem(draft.path, f"shape mismatch: expression has shape {shape}, dims give {declared}")
                return None
        dims = tuple(draft.dims) if draft.dims else tuple(f"{draft.name}_dim_{i}" for i in range(len(shape)))
        return Define(draft.name, draft.node, shape, dims, draft.label, draft.keep)

    def _declared_shape(self, dims: list[str] | None, shape: list[Any] | None, path: str,
                        coords: dict[str, list[Any]], checker: ShapeChecker) -> tuple[bool, Shape | None]:
        """(ok, the shape given by dims or shape, or None if neither)."""
        if dims is not None:
            unknown = [d for d in dims if d not in coords]
            if unknown:
                self.problem(f"{path}.dims", f"unknown coordinate(s) {', '.join(unknown)}; define them under coords")
                return False, None
            return True, tuple(len(coords[d]) for d in dims)
        if shape is None:
            return True, None
        sizes: list[int] = []
        for i, entry in enumerate(shape):
            size = _static_int(entry, checker)
            if size is None or size < 1:
                self.problem(f"{path}.shape[{i}]", "must be a positive integer or the name of positive integer "
                                                   "scalar data")
                return False, None
            sizes.append(size)
        return True, tuple(sizes)

    def _dist_shape(self, draft: _DistDraft, checker: ShapeChecker,
                    data: dict[str, np.ndarray]) -> tuple[DistCall, Shape, Shape] | None:
        """Bind and check a distribution: (call, batch shape, event shape), or None after a problem."""
        info = draft.info
        shapes: dict[str, Shape] = {}
        static: dict[str, int] = {}
        ok = True
        for pname, node in draft.args.items():
            constraint = info.constraints.get(pname)
            if constraint == "dimension":
                value = _static_int(node, checker)
                if value is None or value < 2:
                    self.problem(draft.path, f"{draft.name}: {pname} must be an integer >= 2 (literal or integer "
                                             "scalar data)")
                    ok = False
                else:
                    static[pname] = value
                continue
            shape = checker.check(node, draft.path, self.problems)
            if shape is None:
                ok = False
                continue
            shapes[pname] = shape
            if constraint is not None and not self._check_constraint(node, constraint, data):
                # a value problem, not a shape problem: dependents can still be checked
                self.problem(draft.path, f"{draft.name}: {pname} must be {_CONSTRAINT_TEXT[constraint]}, "
                                         f"got {expr.to_text(node)}")
        if not ok:
            return None
        try:
            batch, event = _event_shapes(info.event, shapes, static)
        except ShapeError as exc:
            self.problem(draft.path, f"{draft.name}: {exc}")
            return None
        args = tuple((k, v) for k, v in draft.args.items() if k not in static)
        return DistCall(draft.name, args, tuple(static.items()), event), batch, event

    def _check_constraint(self, node: Node, constraint: str, data: dict[str, np.ndarray]) -> bool:
        """Check literal and data arguments statically; expressions of params are left to the sampler."""
        if isinstance(node, Num):
            values = np.asarray(node.value)
        elif isinstance(node, Name) and node.id in data:
            values = data[node.id]
        else:
            return True
        if values.size == 0:
            return True
        match constraint:
            case "positive":
                return bool(np.all(values > 0))
            case "unit":
                return bool(np.all((values >= 0) & (values <= 1)))
            case "nonnegative_int":
                return bool(np.all(values >= 0) and np.all(np.floor(values) == values))
        return True

    def _check_support(self, dist: _DistDraft, values: np.ndarray, data: dict[str, np.ndarray], path: str) -> None:
        support = dist.info.support
        if values.size == 0:
            return
        integral = bool(np.all(np.floor(values) == values))
        message = None
        match support:
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
                bound = _known_values(total, data) if total is not None else np.asarray(1)
                if bound is not None and _exceeds(values, bound):
                    message = "must not exceed total_count"
            case "category":
                arg = dist.args.get("probs", dist.args.get("logits"))
                probs = data.get(arg.id) if isinstance(arg, Name) else None
                size = probs.shape[-1] if probs is not None and probs.ndim else None
                if size is not None and np.any(values >= size):
                    message = f"must be category indices in [0, {size})"
        if message:
            self.problem(path, f"{message} for {dist.name} (observed in {dist.path})")


_CONSTRAINT_TEXT = {
    "positive": "positive",
    "unit": "between 0 and 1",
    "nonnegative_int": "a non-negative integer",
}


def _known_values(node: Node, data: dict[str, np.ndarray]) -> np.ndarray | None:
    if isinstance(node, Num):
        return np.asarray(node.value)
    if isinstance(node, Name) and node.id in data:
        return data[node.id]
    return None


def _exceeds(values: np.ndarray, bound: np.ndarray) -> bool:
    try:
        return bool(np.any(values > bound))
    except ValueError:
        return False


def _static_int(node: Any, checker: ShapeChecker) -> int | None:
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


def _event_shapes(event: Event, shapes: dict[str, Shape], static: dict[str, int]) -> tuple[Shape, Shape]:
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
    raise ShapeError(f"unknown event rule {event}")


def _dependencies(draft: _ParamDraft | _DefineDraft) -> set[str]:
    if isinstance(draft, _DefineDraft):
        return expr.names(draft.node) if draft.node is not None else set()
    if draft.dist is None:
        return set()
    out: set[str] = set()
    for node in draft.dist.args.values():
        out |= expr.names(node)
    return out


def _cycles(deps: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly tangled group of the remaining nodes, for the message."""
    found: list[list[str]] = []
    covered: set[str] = set()
    for start in deps:
        if start in covered:
            continue
        path = [start]
        seen = {start: 0}
        node = start
        while True:
            nxt = next((d for d in sorted(deps[node]) if d in deps), None)
            if nxt is None:
                break
            if nxt in seen:
                cycle = path[seen[nxt]:]
                if not covered & set(cycle):
                    found.append(cycle)
                covered |= set(path)
                break
            seen[nxt] = len(path)
            path.append(nxt)
            node = nxt
        covered |= set(path)
    return found
