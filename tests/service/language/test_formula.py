"""The formula front end compiles to the graph spec users expect, and refuses bad input by field."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.exceptions import SpecError
from service.language.describe import graph_spec
from service.language.formula import compile_formula
from service.language.validate import validate


def table(n: int = 60, seed: int = 0) -> dict[str, list[Any]]:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 6, n)
    return {
        "y": rng.normal(size=n).tolist(),
        "x": rng.normal(size=n).tolist(),
        "k": rng.poisson(3, n).tolist(),
        "b": rng.integers(0, 2, n).tolist(),
        "n": [10] * n,
        "floor": rng.choice(["basement", "first"], n).tolist(),
        "county": [f"c{i}" for i in g],
        "region": [f"r{i % 2}" for i in g],
        "one": ["same"] * n,
    }


def spec(formula: str, **extra: Any) -> dict[str, Any]:
    return {"spec": 1, "formula": formula, "data": table(), **extra}


def outputs(doc: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {n.output: n.shape for n in validate(doc).kept(None)}


def test_names_dims_and_coords_read_like_bambi() -> None:
    model = validate(spec("y ~ 1 + x + floor + (1 | county)"))
    kept = {n.output: n for n in model.kept(None)}
    assert list(kept) == ["Intercept", "x", "floor", "1|county_sigma", "1|county", "sigma"]
    assert kept["floor"].dims == ("floor_dim",) and model.coords["floor_dim"] == ["first"]
    assert kept["1|county"].dims == ("county",)
    assert model.coords["county"] == sorted({f"c{i}" for i in range(6)})
    assert kept["1|county"].noncentered  # non-centered by default


def test_correlated_and_uncorrelated_varying_effects() -> None:
    correlated = outputs(spec("y ~ x + (1 + x | county)"))
    assert {"1|county", "x|county", "1|county_sigma", "x|county_sigma", "county_corr"} <= set(correlated)
    assert correlated["county_corr"] == (2, 2)
    separate = outputs(spec("y ~ x + (1 | county) + (0 + x | county)"))
    assert "county_corr" not in separate and {"1|county", "x|county"} <= set(separate)
    model = validate(spec("y ~ x + (1 + x | county)"))
    assert any(p.dist.name == "LKJCholesky" for p in model.params)


def test_nested_groups() -> None:
    model = validate(spec("y ~ 1 + (1 | region/county)"))
    kept = {n.output: n for n in model.kept(None)}
    assert kept["1|region"].dims == ("region",) and kept["1|region:county"].dims == ("region:county",)
    # only combinations that occur are groups
    assert len(model.coords["region:county"]) == 6


def test_default_priors_scale_with_the_data() -> None:
    data = table()
    small = compile_formula({"spec": 1, "formula": "y ~ x", "data": data})
    data["y"] = [v * 100 for v in data["y"]]
    big = compile_formula({"spec": 1, "formula": "y ~ x", "data": data})
    slope = next(p for p in small["params"].values() if p.get("label") == "x")["dist"]
    slope_big = next(p for p in big["params"].values() if p.get("label") == "x")["dist"]
    scale = float(slope.split(",")[1].rstrip(")"))
    scale_big = float(slope_big.split(",")[1].rstrip(")"))
    assert scale_big == pytest.approx(100 * scale, rel=1e-4)
    assert small["params"]["sigma"]["dist"].startswith("Exponential(")


def test_priors_override_terms_groups_and_family_params() -> None:
    doc = spec("y ~ x + (1 | county)", priors={"x": "Normal(0, 2.5)", "1|county": {"sd": "HalfNormal(1)"},
                                               "sigma": "Exponential(1)", "Intercept": "Normal(0, 10)"})
    graph = graph_spec(validate(doc))
    dists = {v.get("label", k): v["dist"] for k, v in graph["params"].items()}
    assert dists["x"] == "Normal(loc=0, scale=2.5)"
    assert dists["1|county_sigma"] == "HalfNormal(scale=1)"
    assert dists["sigma"] == "Exponential(rate=1)"
    assert dists["Intercept"] == "Normal(loc=0, scale=10)"


@pytest.mark.parametrize("family", ["gaussian", "student_t", "bernoulli", "poisson", "negative_binomial"])
def test_each_family_compiles(family: str) -> None:
    response = {"bernoulli": "b", "poisson": "k", "negative_binomial": "k"}.get(family, "y")
    model = validate(spec(f"{response} ~ x + (1 | county)", family=family))
    assert [o.name for o in model.observes] == [response]


def test_binomial_with_trials_and_p_syntax() -> None:
    a = validate(spec("k ~ x", family="binomial", trials="n"))
    b = validate(spec("p(k, n) ~ x", family="binomial"))
    assert a.observes[0].dist.name == b.observes[0].dist.name == "BinomialLogits"


def test_distributional_sigma() -> None:
    kept = outputs(spec("y ~ x", sigma="~ x"))
    assert {"sigma_Intercept", "sigma_x"} <= set(kept) and "sigma" not in kept


BAD: dict[str, tuple[dict[str, Any], str, str]] = {
    "unknown column": (spec("y ~ x + zz"), "formula", "unknown column 'zz'"),
    "syntax error": (spec("y ~ x + (1 | county"), "formula", "cannot read formula"),
    "python call": (spec("y ~ __import__('os').system('true')"), "formula", "not allowed"),
    "attribute call": (spec("y ~ np.log(x)"), "formula", "not formula syntax"),
    "function call": (spec("y ~ exec(x)"), "formula", "exec() is not allowed"),
    "bernoulli outside 0/1": (spec("y ~ x", family="bernoulli"), "data.y", "0 or 1"),
    "poisson with negatives": (spec("y ~ x", family="poisson"), "data.y", "non-negative integers"),
    "gamma with negatives": (spec("y ~ x", family="gamma"), "data.y", "positive"),
    "beta outside (0, 1)": (spec("k ~ x", family="beta"), "data.k", "between 0 and 1"),
    "binomial without trials": (spec("k ~ x", family="binomial"), "trials", "trials column"),
    "group with one level": (spec("y ~ x + (1 | one)"), "data.one", "one level"),
    "unknown family": (spec("y ~ x", family="weibull"), "family", "unknown family"),
    "unknown prior": (spec("y ~ x", priors={"z": "Normal(0, 1)"}), "priors.z", "no such term"),
    "bad prior": (spec("y ~ x", priors={"x": "Normall(0, 1)"}), "priors.x", "unknown distribution"),
    "prior with a name": (spec("y ~ x", priors={"x": "Normal(mu, 1)"}), "priors.x", "must be numbers"),
    "negative prior scale": (spec("y ~ x", priors={"x": "Normal(0, -1)"}), "priors.x", "positive"),
    "sigma for poisson": (spec("k ~ x", family="poisson", sigma="~ x"), "sigma", "no sigma"),
    "missing value": ({"spec": 1, "formula": "y ~ x", "data": {"y": [1.0, 2.0], "x": [1.0, None]}}, "data.x[1]",
                      "missing"),
    "ragged columns": ({"spec": 1, "formula": "y ~ x", "data": {"y": [1.0, 2.0], "x": [1.0]}}, "data",
                       "different lengths"),
    "nested column": ({"spec": 1, "formula": "y ~ x", "data": {"y": [1.0, 2.0], "x": [[1], [2, 3]]}}, "data.x",
                      "must be a flat list"),
    "huge integer": ({"spec": 1, "formula": "y ~ x", "data": {"y": [1.0, 2.0], "x": [1, 2**62 + 1]}}, "data.x",
                     "integer too large"),
    "no formula": ({"spec": 1, "formula": 3, "data": table()}, "formula", "must be a string"),
    "unknown field": (spec("y ~ x", prior={}), "prior", "unknown field"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_formula_spec_is_refused_with_its_path(kind: str) -> None:
    doc, path, fragment = BAD[kind]
    with pytest.raises(SpecError) as info:
        validate(doc)
    found = [(p.path, p.message) for p in info.value.problems]
    assert any(p == path and fragment in m for p, m in found), found
