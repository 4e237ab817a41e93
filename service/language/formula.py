"""Formula front end (design 2.2): `y ~ 1 + x + (1 + x | county)` compiled to a graph spec.

The formula is read by `formulae` (the parser Bambi uses), after a check that it
only uses formula syntax: names, numbers, `~ + - * : / | ( ) ,` and the
functions `C()` (categorical) and `p()` (binomial successes/trials). formulae
looks functions up by name in Python namespaces, so nothing else may reach it.

The result is an ordinary graph spec: every later stage (validation, lowering,
engine, results) is shared; the columns are checked by data.py, as graph data
are. Parameter names follow Bambi: `Intercept`, `x`, `f` (dims `f_dim`),
`1|county` and `x|county` (dims `county`), `1|county_sigma`, `sigma`. Internal
params (raw group effects, Cholesky factors) are not stored.

Default priors are weakly informative and scaled to the data, as rstanarm's
autoscaled defaults (see README): coefficients Normal(0, 2.5 sy/sx), intercept
Normal(link(mean y), ...), group sds HalfNormal with the same scales, residual
sd Exponential(1/sy); sy = sd(y) for gaussian/student_t and 1 otherwise.
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
from service.language import data, expr
from service.language.catalog import DISTRIBUTIONS

FORMULA_KEYS = ("spec", "formula", "family", "data", "priors", "trials", "sigma", "fitted_priors", "name",
                "description")
FAMILY_PARAMS = {
    "gaussian": ("sigma",),
    "student_t": ("sigma", "nu"),
    "bernoulli": (),
    "binomial": (),
    "poisson": (),
    "negative_binomial": ("phi",),
    "gamma": ("alpha",),
    "beta": ("kappa",),
}
LINKS = {"gaussian": "identity", "student_t": "identity", "bernoulli": "logit", "binomial": "logit",
         "poisson": "log", "negative_binomial": "log", "gamma": "log", "beta": "logit"}
LKJ_ETA = 1.0
"""brms' default: uniform over correlation matrices."""

_TOKEN_RE = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|(\d+(?:\.\d*)?)|(.))")
_ALLOWED_SYMBOLS = set("~+-*:/|(),")
_ALLOWED_CALLS = {"C", "p"}


@dataclass
class _Build:
    """The graph spec under construction."""

    data: dict[str, Any] = field(default_factory=dict)
    coords: dict[str, list[Any]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    define: dict[str, Any] = field(default_factory=dict)
    eta: list[str] = field(default_factory=list)
    counter: int = 0

    def id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"


def compile_formula(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A formula spec -> the equivalent graph spec (data as numpy arrays). SpecError lists every problem."""
    problems: list[Problem] = []
    for key in doc:
        if key not in FORMULA_KEYS:
            problems.append(Problem(str(key), f"unknown field of a formula spec; expected one of "
                                              f"{', '.join(FORMULA_KEYS)}"))
    family = doc.get("family", "gaussian")
    if family not in FAMILY_PARAMS:
        problems.append(Problem("family", f"unknown family {family!r}; one of {', '.join(FAMILY_PARAMS)}"))
    formula = doc.get("formula")
    if not isinstance(formula, str) or "~" not in formula:
        problems.append(Problem("formula", "must be a string such as 'y ~ 1 + x + (1 | group)'"))
    else:
        problems += _check_syntax(formula, "formula")
    columns = data.columns(doc.get("data"), problems)
    priors = doc.get("priors") or {}
    if not isinstance(priors, Mapping):
        problems.append(Problem("priors", "must be a mapping of term names to priors"))
        priors = {}
    if problems:
        raise SpecError(problems)
    assert isinstance(formula, str) and columns
    import pandas as pd

    return _Compiler(formula, str(family), pd.DataFrame(columns), priors, doc).run()


def _check_syntax(formula: str, path: str) -> list[Problem]:
    """Only formula syntax reaches formulae: names, numbers, operators, C() and p()."""
    if len(formula) > expr.MAX_EXPR_CHARS:
        return [Problem(path, f"longer than {expr.MAX_EXPR_CHARS} characters")]
    tokens = [m.groups() for m in _TOKEN_RE.finditer(formula) if m.group(0).strip()]
    for i, (name, _number, symbol) in enumerate(tokens):
        if symbol is not None and symbol not in _ALLOWED_SYMBOLS:
            return [Problem(path, f"{symbol!r} is not formula syntax (names, numbers, ~ + - * : / | ( ) and "
                                  "C(), p() only)")]
        calls = i + 1 < len(tokens) and tokens[i + 1][2] == "("
        if name is not None and calls and name not in _ALLOWED_CALLS:
            return [Problem(path, f"function {name}() is not allowed in a formula (only C() and p())")]
    return []


class _Compiler:
    def __init__(self, formula: str, family: str, frame: Any, priors: Mapping[str, Any],
                 doc: Mapping[str, Any]) -> None:
        self.formula, self.family, self.frame, self.priors, self.doc = formula, family, frame, priors, doc
        self.problems: list[Problem] = []
        self.used_priors: set[str] = set()
        self.b = _Build()

    def run(self) -> dict[str, Any]:
        design = self._design(self.formula, "formula")
        y = self._response(design)
        if design is None or y is None:
            raise SpecError(self.problems)
        gaussian_like = self.family in ("gaussian", "student_t")
        self.sy = float(np.std(y)) if gaussian_like and np.std(y) > 0 else 1.0
        self.center = _link_of_mean(self.family, y)
        self._common(design, prefix="", eta=self.b.eta, scale=self.sy, center=self.center)
        if design.group is not None:
            self._groups(design.group)
        likelihood = self._likelihood()
        unknown = sorted(set(self.priors) - self.used_priors)
        for key in unknown:
            self.problems.append(Problem(f"priors.{key}", "no such term or family parameter in this model"))
        if self.problems:
            raise SpecError(self.problems)
        b = self.b
        b.define["eta"] = {"expr": " + ".join(b.eta) if b.eta else "0", "keep": False}
        graph = {"spec": 1, "data": b.data, "coords": b.coords, "params": b.params, "define": b.define,
                 "observe": {self.y_name: likelihood}}
        if "fitted_priors" in self.doc:  # members name the graph's params, or their labels (`Intercept`)
            graph["fitted_priors"] = self.doc["fitted_priors"]
        return graph

    # -- design -----------------------------------------------------------------------------------

    def _design(self, formula: str, path: str) -> Any:
        from formulae import design_matrices

        try:
            return design_matrices(formula, self.frame, na_action="error")
        except KeyError as exc:
            name = exc.args[0] if exc.args else "?"
            self.problems.append(Problem(path, f"unknown column {name!r}; columns are "
                                               f"{', '.join(self.frame.columns)}"))
        except Exception as exc:  # formulae's ParseError, ScanError, ValueError...
            self.problems.append(Problem(path, f"cannot read formula: {exc}"))
        return None

    def _response(self, design: Any) -> np.ndarray | None:
        if design is None:
            return None
        if design.response is None:
            self.problems.append(Problem("formula", "needs a response on the left of ~"))
            return None
        values = np.asarray(design.response.design_matrix)
        name = str(design.response.name)
        path = f"data.{name}" if name in self.frame.columns else "formula"
        trials = None
        if design.response.kind == "proportion":
            if self.family != "binomial":
                self.problems.append(Problem("formula", "p(successes, trials) needs family binomial"))
                return None
            values, trials = values[:, 0], values[:, 1]
            name = name[2:].split(",")[0].strip()
        elif self.family == "binomial":
            column = self.doc.get("trials")
            if not isinstance(column, str) or column not in self.frame.columns:
                self.problems.append(Problem("trials", "binomial needs the trials column: `trials: n` or "
                                                       "`formula: p(y, n) ~ ...`"))
                return None
            trials = np.asarray(self.frame[column])
        if values.ndim != 1 or values.dtype.kind not in "iuf":
            self.problems.append(Problem(path, f"the response must be one numeric column for {self.family}"))
            return None
        message = _support_problem(self.family, values, trials)
        if message:
            self.problems.append(Problem(path, f"{message} for family {self.family}"))
            return None
        self.y_name = name if expr.NAME_RE.match(name) and not re.match(r"^[A-Z]+\d+$", name) else "y"
        self.b.data[self.y_name] = values
        if trials is not None:
            self.b.data["T0"] = trials.astype(np.int64)
        return values

    # -- common (population-level) effects --------------------------------------------------------

    def _common(self, design: Any, *, prefix: str, eta: list[str], scale: float, center: float) -> None:
        """Intercept and slopes; `prefix` names a distributional parameter's terms (`sigma_`)."""
        common = design.common
        if common is None:
            return
        matrix = np.asarray(common.design_matrix, dtype=np.float64)
        intercept_var = (2.5 * scale) ** 2
        intercept_key = None
        params: dict[str, Any] = {}
        for term, sl in common.slices.items():
            columns = matrix[:, sl]
            label = f"{prefix}{term}"
            if term == "Intercept":
                intercept_key = label
                continue
            sx = np.where(columns.std(axis=0) > 0, columns.std(axis=0), 1.0)
            sd = 2.5 * scale / sx
            intercept_var += float(np.sum((sd * columns.mean(axis=0)) ** 2))
            pid, did = self.b.id("b"), self.b.id("X")
            levels = getattr(common.terms[term], "levels", None)
            if columns.shape[1] == 1 and levels is None:
                self.b.data[did] = columns[:, 0]
                default = f"Normal(0, {_num(sd[0])})"
                params[pid] = {"dist": self._prior(label, default), "label": label}
                eta.append(f"{pid} * {did}")
            else:
                dim = _dim_name(f"{label}_dim")
                names = levels if levels is not None and len(levels) == columns.shape[1] else common.terms[term].labels
                self.b.coords[dim] = [str(v) for v in names]
                self.b.data[did] = columns
                sid = self.b.id("S")
                self.b.data[sid] = sd
                params[pid] = {"dist": self._prior(label, f"Normal(0, {sid})"), "dims": [dim], "label": label}
                eta.append(f"{did} @ {pid}")
        if intercept_key is not None:
            pid = self.b.id("b")
            default = f"Normal({_num(center)}, {_num(math.sqrt(intercept_var))})"
            params = {pid: {"dist": self._prior(intercept_key, default), "label": intercept_key}, **params}
            eta.insert(0, pid)
        self.b.params.update(params)

    # -- group-level effects ----------------------------------------------------------------------

    def _groups(self, group: Any) -> None:
        correlated = _correlated_blocks(self.formula)
        by_factor: dict[str, list[str]] = {}
        for term_name in group.terms:
            factor = term_name.split("|", 1)[1]
            by_factor.setdefault(factor, []).append(term_name)
        matrix = group.design_matrix  # scipy sparse: rows x (groups x terms)
        for factor, names in by_factor.items():
            levels = [str(v) for v in group.terms[names[0]].groups]
            index = self._group_index(factor, levels)
            if index is None:
                continue
            dim = _dim_name(factor)
            self.b.coords[dim] = levels
            gid = self.b.id("G")
            self.b.data[gid] = index
            values: dict[str, np.ndarray] = {}
            for name in names:
                term = group.terms[name]
                if term.kind not in ("intercept", "numeric"):
                    self.problems.append(Problem("formula", f"group-level term {name!r}: only intercepts and "
                                                            "numeric slopes vary by group"))
                    return
                block = matrix[:, group.slices[name]]
                values[name] = np.asarray(block.sum(axis=1), dtype=np.float64).ravel()  # one non-zero per row
            blocks = [b for b in correlated.get(factor, []) if len(b) > 1 and all(t in values for t in b)]
            in_block = {t for b in blocks for t in b}
            for name in names:
                if name not in in_block:
                    self._uncorrelated(name, dim, gid, values[name], group.terms[name].kind)
            for block in blocks:
                self._correlated(block, factor, dim, gid, values, group)

    def _group_index(self, factor: str, levels: list[str]) -> np.ndarray | None:
        """Row -> group number; only combinations that occur count as groups (nested factors)."""
        columns = factor.split(":")
        labels = self.frame[columns[0]].astype(str)
        for column in columns[1:]:
            labels = labels + ":" + self.frame[column].astype(str)
        present = set(labels)
        levels[:] = [level for level in levels if level in present]
        if len(levels) < 2:
            path = f"data.{columns[-1]}" if columns[-1] in self.frame.columns else "formula"
            self.problems.append(Problem(path, f"group column {factor!r} has one level; partial pooling needs at "
                                               "least two groups"))
            return None
        position = {level: i for i, level in enumerate(levels)}
        return np.asarray([position[v] for v in labels], dtype=np.int64)

    def _sd_scale(self, values: np.ndarray, kind: str) -> float:
        if kind == "intercept":
            return 2.5 * self.sy
        sx = float(np.std(values))
        return 2.5 * self.sy / (sx if sx > 0 else 1.0)

    def _uncorrelated(self, name: str, dim: str, gid: str, values: np.ndarray, kind: str) -> None:
        sd_id, r_id = self.b.id("sd"), self.b.id("r")
        default = f"HalfNormal({_num(self._sd_scale(values, kind))})"
        self.b.params[sd_id] = {"dist": self._group_prior(name, default), "label": f"{name}_sigma"}
        self.b.params[r_id] = {"dist": f"Normal(0, {sd_id})", "dims": [dim], "reparam": "noncentered",
                               "label": name}
        self._effect(f"{r_id}[{gid}]", kind, values)

    def _correlated(self, block: list[str], factor: str, dim: str, gid: str, values: dict[str, np.ndarray],
                    group: Any) -> None:
        k = len(block)
        effect_dim = _dim_name(f"{factor}__effect")
        self.b.coords[effect_dim] = list(block)
        sd_id, s_id, l_id, z_id, r_id = (self.b.id(p) for p in ("sd", "S", "L", "z", "R"))
        scales = [self._sd_scale(values[t], group.terms[t].kind) for t in block]
        overrides = [self._group_prior(t, None) for t in block]
        if any(o is not None for o in overrides):
            self.problems.append(Problem(f"priors.{block[0]}", "sd priors of correlated terms are not "
                                                               "overridable yet; write (1|g) + (0 + x|g) for "
                                                               "uncorrelated terms with their own priors"))
        self.b.data[s_id] = np.asarray(scales)
        eta = self._lkj_eta(factor)
        self.b.params[sd_id] = {"dist": f"HalfNormal({s_id})", "dims": [effect_dim], "keep": False}
        self.b.params[l_id] = {"dist": f"LKJCholesky({k}, {_num(eta)})", "keep": False}
        self.b.params[z_id] = {"dist": "Normal(0, 1)", "shape": [len(self.b.coords[dim]), k], "keep": False}
        self.b.define[r_id] = {"expr": f"({z_id} @ transpose({l_id})) * {sd_id}", "keep": False}
        self.b.define[self.b.id("corr")] = {"expr": f"{l_id} @ transpose({l_id})", "label": f"{factor}_corr"}
        for i, term in enumerate(block):
            self.b.define[self.b.id("sdv")] = {"expr": f"{sd_id}[{i}]", "label": f"{term}_sigma"}
            self.b.define[self.b.id("r")] = {"expr": f"{r_id}[:, {i}]", "dims": [dim], "label": term}
            self._effect(f"{r_id}[{gid}, {i}]", group.terms[term].kind, values[term])

    def _effect(self, indexed: str, kind: str, values: np.ndarray) -> None:
        if kind == "intercept":
            self.b.eta.append(indexed)
        else:
            zid = self.b.id("Z")
            self.b.data[zid] = values
            self.b.eta.append(f"{indexed} * {zid}")

    # -- family -----------------------------------------------------------------------------------

    def _likelihood(self) -> str:
        fam = self.family
        sigma = "sigma"
        if fam in ("gaussian", "student_t"):
            sigma = self._sigma()
        if fam == "student_t":
            self.b.params["nu"] = {"dist": self._prior("nu", "Gamma(2, 0.1)")}
        if fam == "negative_binomial":
            self.b.params["phi"] = {"dist": self._prior("phi", "Exponential(1)")}
        if fam == "gamma":
            self.b.params["alpha"] = {"dist": self._prior("alpha", "Exponential(1)")}
        if fam == "beta":
            self.b.params["kappa"] = {"dist": self._prior("kappa", "HalfCauchy(1)")}
        if self.doc.get("sigma") is not None and fam not in ("gaussian", "student_t"):
            self.problems.append(Problem("sigma", f"family {fam} has no sigma to model"))
        return {
            "gaussian": f"Normal(eta, {sigma})",
            "student_t": f"StudentT(nu, eta, {sigma})",
            "bernoulli": "BernoulliLogits(eta)",
            "binomial": "BinomialLogits(eta, T0)",
            "poisson": "Poisson(exp(eta))",
            "negative_binomial": "NegativeBinomial2(exp(eta), phi)",
            "gamma": "Gamma(alpha, alpha * exp(-eta))",
            "beta": "Beta(inv_logit(eta) * kappa, (1 - inv_logit(eta)) * kappa)",
        }[fam]

    def _sigma(self) -> str:
        """The residual sd: a param, or `sigma: "~ x"` (log link) as its own linear predictor."""
        spec = self.doc.get("sigma")
        if spec is None:
            self.b.params["sigma"] = {"dist": self._prior("sigma", f"Exponential({_num(1 / self.sy)})")}
            return "sigma"
        if not isinstance(spec, str) or not spec.strip().startswith("~"):
            self.problems.append(Problem("sigma", "a distributional term is a formula such as '~ x'"))
            return "1"
        problems = _check_syntax(spec, "sigma")
        if problems:
            self.problems += problems
            return "1"
        response = self.formula.split("~", 1)[0].strip()
        design = self._design(f"{response} {spec.strip()}", "sigma")
        if design is None:
            return "1"
        if design.group is not None:
            self.problems.append(Problem("sigma", "group-level terms are not supported in a sigma formula"))
            return "1"
        terms: list[str] = []
        self._common(design, prefix="sigma_", eta=terms, scale=1.0 / 2.5, center=math.log(self.sy))
        self.b.define["log_sigma"] = {"expr": " + ".join(terms) if terms else "0", "keep": False}
        return "exp(log_sigma)"

    # -- priors -----------------------------------------------------------------------------------

    def _prior(self, key: str, default: str) -> str:
        if key not in self.priors:
            return default
        self.used_priors.add(key)
        return self._checked_prior(self.priors[key], f"priors.{key}", default)

    def _group_prior(self, term: str, default: str | None) -> str | None:
        raw = self.priors.get(term)
        if raw is None:
            return default
        self.used_priors.add(term)
        if not isinstance(raw, Mapping) or set(raw) - {"sd"}:
            self.problems.append(Problem(f"priors.{term}", "a group-level prior is {sd: \"HalfNormal(1)\"}"))
            return default
        return self._checked_prior(raw.get("sd"), f"priors.{term}.sd", default or "")

    def _lkj_eta(self, factor: str) -> float:
        for key in (f"cor|{factor}", "cor"):
            if key in self.priors:
                self.used_priors.add(key)
                value = self.priors[key]
                if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                    self.problems.append(Problem(f"priors.{key}", "the LKJ concentration must be a positive number"))
                    return LKJ_ETA
                return float(value)
        return LKJ_ETA

    def _checked_prior(self, raw: Any, path: str, default: str) -> str:
        try:
            node = expr.parse(raw, path)
        except SpecError as exc:
            self.problems += exc.problems
            return default
        if not isinstance(node, expr.Call):
            self.problems.append(Problem(path, f"expected a distribution such as Normal(0, 1), got {raw!r:.60}"))
            return default
        if node.func not in DISTRIBUTIONS:
            hint = difflib.get_close_matches(node.func, DISTRIBUTIONS, n=1)
            self.problems.append(Problem(path, f"unknown distribution {node.func!r}"
                                               + (f"; did you mean {hint[0]}?" if hint else "")))
            return default
        if expr.names(node):
            self.problems.append(Problem(path, "prior arguments must be numbers"))
            return default
        return str(raw)


def _correlated_blocks(formula: str) -> dict[str, list[list[str]]]:
    """Terms written together, `(1 + x | g)`, vary jointly (lme4/brms); formulae's names for them by factor."""
    blocks: dict[str, list[list[str]]] = {}
    for lhs, rhs in re.findall(r"\(([^()|]*)\|([^()|]*)\)", formula):
        parts = [p.strip() for p in lhs.split("+") if p.strip()]
        intercept = "0" not in parts and "-1" not in lhs.replace(" ", "")
        terms = (["1"] if intercept else []) + [p for p in parts if p not in ("0", "1", "-1")]
        factors = [f.strip() for f in rhs.split("/")]
        for depth in range(len(factors)):
            factor = ":".join(factors[: depth + 1])
            blocks.setdefault(factor, []).append([f"{t}|{factor}" for t in terms])
    return blocks


def _support_problem(family: str, y: np.ndarray, trials: np.ndarray | None) -> str | None:
    integral = bool(np.all(np.floor(y) == y))
    if family == "bernoulli" and not np.all((y == 0) | (y == 1)):
        return "values must be 0 or 1"
    if family in ("poisson", "negative_binomial") and not (integral and np.all(y >= 0)):
        return "values must be non-negative integers (counts)"
    if family == "binomial":
        if not (integral and np.all(y >= 0)):
            return "successes must be non-negative integers"
        if trials is not None and (np.any(trials < y) or not np.all(np.floor(trials) == trials)):
            return "successes must not exceed the integer trials"
    if family == "gamma" and not np.all(y > 0):
        return "values must be positive"
    if family == "beta" and not np.all((y > 0) & (y < 1)):
        return "values must lie strictly between 0 and 1"
    return None


def _link_of_mean(family: str, y: np.ndarray) -> float:
    mean = float(np.mean(y))
    link = LINKS[family]
    if link == "identity":
        return mean
    if family == "binomial":
        return 0.0  # the mean proportion needs the trials; 0 on the logit scale is the neutral choice
    if link == "log":
        return math.log(mean) if mean > 0 else 0.0
    p = min(max(mean, 0.01), 0.99)
    return math.log(p / (1 - p))


def _num(value: float) -> str:
    return f"{float(value):.6g}"


def _dim_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_:]", "_", name)
    return cleaned if cleaned[:1].isalpha() else f"d_{cleaned}"
