"""Elicitation: families recovered from their exact quantiles, auto picks the true one, interval masses fit,
every inconsistent input is a SpecError with its path, and the route answers in the API's shapes."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from cli.stack import free_port
from service.api.app import create_app
from service.client import ApiError, Client
from service.config import ApiSettings
from service.exceptions import SpecError
from service.language.catalog import DISTRIBUTIONS
from service.language.expr import Num
from service.language.ir import Param
from service.language.validate import validate
from service.priors.elicit import FAMILIES, TIE, Elicitation, elicit
from tests.conftest import api_in_thread
from tests.service.conftest import TOKENS

PROBS = (0.05, 0.25, 0.5, 0.75, 0.95)

# family -> (the scipy distribution, its parameters under numpyro's names)
TRUTH: dict[str, tuple[Any, dict[str, float]]] = {
    "Normal": (stats.norm(1.5, 2.0), {"loc": 1.5, "scale": 2.0}),
    "LogNormal": (stats.lognorm(0.4, scale=math.exp(1.0)), {"loc": 1.0, "scale": 0.4}),
    "Gamma": (stats.gamma(3.0, scale=1 / 2.0), {"concentration": 3.0, "rate": 2.0}),
    "Beta": (stats.beta(13.9, 6.1), {"concentration1": 13.9, "concentration0": 6.1}),
    "StudentT": (stats.t(4.0, 1.0, 2.0), {"df": 4.0, "loc": 1.0, "scale": 2.0}),
    "HalfNormal": (stats.halfnorm(scale=2.0), {"scale": 2.0}),
    "Exponential": (stats.expon(scale=1 / 2.0), {"rate": 2.0}),
    "InverseGamma": (stats.invgamma(3.0, scale=2.0), {"concentration": 3.0, "rate": 2.0}),
    "Weibull": (stats.weibull_min(1.7, scale=3.0), {"scale": 3.0, "concentration": 1.7}),
}


def exact_quantiles(family: str) -> dict[str, float]:
    """As JSON brings them: string keys."""
    dist, _ = TRUTH[family]
    return {str(p): float(dist.ppf(p)) for p in PROBS}


def test_every_family_is_covered_with_the_catalogs_names() -> None:
    assert set(TRUTH) == set(FAMILIES)
    for family, (_, params) in TRUTH.items():
        assert tuple(params) == DISTRIBUTIONS[family].params, family


@pytest.mark.parametrize("family", list(TRUTH))
def test_family_recovered_from_its_exact_quantiles(family: str) -> None:
    fit = elicit({"family": family, "quantiles": exact_quantiles(family)}).best
    assert fit.family == family
    assert list(fit.params) == list(TRUTH[family][1])
    for name, true in TRUTH[family][1].items():
        assert abs(fit.params[name] - true) <= 1e-3 * abs(true), (name, fit.params[name], true)
    assert fit.error < 1e-12


@pytest.mark.parametrize("family", list(TRUTH))
def test_auto_picks_the_true_family(family: str) -> None:
    result = elicit({"family": "auto", "quantiles": exact_quantiles(family)})
    assert result.best.family == family, [(f.family, f.error) for f in result.fits]
    assert result.fits[0] == result.best
    rest = [f.error for f in result.fits[1:]]
    assert all(a <= b + TIE for a, b in itertools.pairwise(rest))  # ties go by FAMILIES' order


def test_auto_fits_only_families_whose_support_holds_the_values() -> None:
    tried = {f.family for f in elicit({"quantiles": {"0.1": -0.5, "0.5": 0.2, "0.9": 0.9}}).fits}
    assert tried == {"Normal", "StudentT"}
    tried = {f.family for f in elicit({"quantiles": {"0.1": 0.5, "0.5": 1.2, "0.9": 3.0}}).fits}
    assert tried == set(FAMILIES) - {"Beta"}
    # one judgement: only the one-parameter families
    assert {f.family for f in elicit({"quantiles": {"0.5": 2.0}}).fits} == {"HalfNormal", "Exponential"}


def squared_errors(dist: Any, body: dict[str, Any]) -> list[float]:
    errors = [(dist.cdf(v) - float(p)) ** 2 for p, v in body.get("quantiles", {}).items()]
    errors += [(dist.cdf(i["high"]) - dist.cdf(i["low"]) - i["mass"]) ** 2 for i in body.get("intervals", [])]
    return errors


def beta_of(result: Elicitation) -> Any:
    params = result.best.params
    return stats.beta(params["concentration1"], params["concentration0"])


def test_median_and_a_90_percent_interval_give_a_beta() -> None:
    body = {"family": "Beta", "quantiles": {"0.5": 0.7}, "intervals": [{"low": 0.5, "high": 0.85, "mass": 0.9}]}
    result = elicit(body)
    beta = beta_of(result)
    assert result.best.error < 1e-12  # two judgements, two parameters: met exactly
    assert beta.median() == pytest.approx(0.7, abs=1e-6)
    assert beta.cdf(0.85) - beta.cdf(0.5) == pytest.approx(0.9, abs=1e-6)
    assert sum(squared_errors(beta, body)) == pytest.approx(result.best.error, abs=1e-14)


def test_judgements_no_beta_meets_report_their_error() -> None:
    # the quartiles say "narrow", the 90% interval says "wide": no Beta meets all three
    body = {"family": "Beta", "quantiles": {"0.25": 0.65, "0.5": 0.7, "0.75": 0.75},
            "intervals": [{"low": 0.3, "high": 0.95, "mass": 0.9}]}
    result = elicit(body)
    errors = squared_errors(beta_of(result), body)
    assert result.best.error > 1e-3
    assert sum(errors) == pytest.approx(result.best.error, rel=1e-9)
    assert max(errors) <= result.best.error


def test_interval_masses_alone_are_judgements() -> None:
    dist = stats.norm(10.0, 3.0)
    intervals = [{"low": float(dist.ppf(a)), "high": float(dist.ppf(b)), "mass": b - a}
                 for a, b in ((0.05, 0.95), (0.25, 0.75), (0.1, 0.6))]
    fit = elicit({"family": "Normal", "intervals": intervals}).best
    assert fit.params["loc"] == pytest.approx(10.0, rel=1e-6)
    assert fit.params["scale"] == pytest.approx(3.0, rel=1e-6)


def test_bound_hints_break_ties_and_exclude_families() -> None:
    body: dict[str, Any] = {"quantiles": {"0.5": 0.7}, "intervals": [{"low": 0.5, "high": 0.85, "mass": 0.9}]}
    # two judgements fit every two-parameter family exactly: the simplest in FAMILIES' order wins ...
    assert elicit(body).best.family == "Normal"
    # ... unless the expert says where the quantity is bounded
    assert elicit({**body, "lower": 0, "upper": 1}).best.family == "Beta"
    assert elicit({**body, "lower": 0}).best.family == "LogNormal"
    tried = {f.family for f in elicit({**body, "lower": -1}).fits}
    assert tried == {"Normal"}  # StudentT needs three judgements


def test_fixed_df_makes_two_judgements_enough_for_student_t() -> None:
    dist = stats.t(3.0, 0.0, 1.5)
    quantiles = {str(p): float(dist.ppf(p)) for p in (0.5, 0.9)}
    fit = elicit({"family": "StudentT", "quantiles": quantiles, "df": 3}).best
    assert fit.params == pytest.approx({"df": 3.0, "loc": 0.0, "scale": 1.5}, abs=1e-9)


def test_deterministic_and_scale_free() -> None:
    body = {"quantiles": {"0.1": 2.0, "0.5": 3.1, "0.9": 6.0}}
    assert elicit(body) == elicit(body)
    tiny = elicit({"family": "Gamma", "quantiles": {p: v * 1e-9 for p, v in body["quantiles"].items()}}).best
    huge = elicit({"family": "Gamma", "quantiles": {p: v * 1e9 for p, v in body["quantiles"].items()}}).best
    assert tiny.params["concentration"] == pytest.approx(huge.params["concentration"], rel=1e-6)
    assert tiny.params["rate"] * 1e-9 == pytest.approx(huge.params["rate"] * 1e9, rel=1e-6)
    assert tiny.error == pytest.approx(huge.error, rel=1e-6)


def test_python_callers_may_use_number_keys() -> None:
    strings = elicit({"family": "Beta", "quantiles": {"0.05": 0.5, "0.5": 0.7, "0.95": 0.85}})
    numbers = elicit({"family": "Beta", "quantiles": {0.05: 0.5, 0.5: 0.7, 0.95: 0.85}})
    assert strings.best.params == numbers.best.params


def param_of(spec: str) -> Param:
    model = validate({"spec": 1, "params": {"theta": spec}, "data": {"y": [0.5, 0.6]},
                      "observe": {"y": "Normal(theta, 1)"}})
    (node,) = model.nodes
    assert isinstance(node, Param)
    return node


def test_spec_strings_validate_as_a_params_distribution() -> None:
    for family in FAMILIES:
        for fit in elicit({"family": family, "quantiles": exact_quantiles(family)}).fits:
            param = param_of(fit.spec)
            assert param.dist.name == fit.family
            args = dict(param.dist.args)
            assert list(args) == list(fit.params)
            for name, value in fit.params.items():
                literal = args[name]
                assert isinstance(literal, Num)
                assert literal.value == pytest.approx(value, rel=5e-4)  # 4 significant digits
    assert elicit({"family": "Beta", "quantiles": exact_quantiles("Beta")}).best.spec == "Beta(13.9, 6.1)"
    negative = elicit({"family": "Normal", "quantiles": {"0.05": -1e6, "0.95": -1e5}}).best
    assert param_of(negative.spec).dist.name == "Normal"


BAD: dict[str, tuple[dict[str, Any], str, str]] = {
    # kind: (body, expected path, expected message fragment)
    "non-monotone quantiles": ({"quantiles": {"0.05": 0.5, "0.5": 0.4, "0.95": 0.85}}, "quantiles",
                               "values must increase with the probabilities"),
    "equal values": ({"quantiles": {"0.25": 0.5, "0.75": 0.5}}, "quantiles", "must increase"),
    "probability above one": ({"quantiles": {"0.5": 0.7, "1.5": 0.9}}, "quantiles.1.5",
                              "strictly between 0 and 1"),
    "probability zero": ({"quantiles": {"0": 0.1, "0.5": 0.7}}, "quantiles.0", "strictly between 0 and 1"),
    "probability not a number": ({"quantiles": {"median": 0.7, "0.9": 1}}, "quantiles.median",
                                 "strictly between 0 and 1"),
    "probability NaN": ({"quantiles": {"nan": 0.7, "0.9": 1}}, "quantiles.nan", "strictly between 0 and 1"),
    "duplicate probability": ({"quantiles": {"0.5": 0.7, "0.50": 0.8, "0.9": 1}}, "quantiles.0.50",
                              "duplicate probability (also given as 0.5)"),
    "value NaN": ({"quantiles": {"0.5": math.nan, "0.9": 1}}, "quantiles.0.5", "finite number"),
    "value infinite": ({"quantiles": {"0.5": math.inf, "0.9": 1}}, "quantiles.0.5", "finite number"),
    "value huge": ({"quantiles": {"0.5": 1e300, "0.9": 1e301}}, "quantiles.0.5", "magnitude at most"),
    "value a huge int": ({"quantiles": {"0.5": 10**400, "0.9": 1}}, "quantiles.0.5", "finite number"),
    "value a string": ({"quantiles": {"0.5": "0.7", "0.9": 1}}, "quantiles.0.5", "finite number"),
    "value a bool": ({"quantiles": {"0.5": True, "0.9": 1}}, "quantiles.0.5", "finite number"),
    "quantiles a list": ({"quantiles": [0.5, 0.7]}, "quantiles", "a mapping of probability to value"),
    "mass above one": ({"intervals": [{"low": 0.5, "high": 0.85, "mass": 1.2}, {"low": 0, "high": 1, "mass": .5}]},
                       "intervals[0].mass", "strictly between 0 and 1"),
    "mass zero": ({"intervals": [{"low": 0.5, "high": 0.85, "mass": 0}]}, "intervals[0].mass", "between 0 and 1"),
    "low above high": ({"quantiles": {"0.5": 0.7}, "intervals": [{"low": 0.85, "high": 0.5, "mass": 0.9}]},
                       "intervals[0].high", "must be greater than low"),
    "interval missing mass": ({"intervals": [{"low": 0.5, "high": 0.85}]}, "intervals[0].mass", "missing"),
    "interval unknown field": ({"intervals": [{"low": 0.5, "high": 0.85, "mass": 0.9, "p": 1}]},
                               "intervals[0].p", "unknown field"),
    "interval not a mapping": ({"intervals": [[0.5, 0.85, 0.9]]}, "intervals[0]", "a mapping"),
    "outside Beta's support": ({"family": "Beta", "quantiles": {"0.05": -1, "0.5": 0.5}}, "quantiles.0.05",
                               "-1 is outside the support of Beta (0, 1)"),
    "Beta at one": ({"family": "Beta", "quantiles": {"0.05": 0.5, "0.5": 1}}, "quantiles.0.5",
                    "outside the support of Beta"),
    "interval outside Gamma's support": ({"family": "Gamma", "quantiles": {"0.5": 1},
                                          "intervals": [{"low": -1, "high": 2, "mass": 0.9}]},
                                         "intervals[0].low", "-1 is outside the support of Gamma (0, inf)"),
    "unknown family": ({"family": "Gauss", "quantiles": {"0.05": 0.5, "0.5": 0.7}}, "family",
                       "known: auto, HalfNormal, Exponential, Normal"),
    "family not a string": ({"family": 1, "quantiles": {"0.05": 0.5, "0.5": 0.7}}, "family", "a family name"),
    "too few for Gamma": ({"family": "Gamma", "quantiles": {"0.5": 0.7}}, "quantiles",
                          "give at least 2 judgements, got 1"),
    "too few for StudentT": ({"family": "StudentT", "quantiles": {"0.05": 0.5, "0.5": 0.7}}, "quantiles",
                             "give at least 3 judgements (or fix df), got 2"),
    "too few for auto": ({"quantiles": {"0.5": -0.7}}, "quantiles", "no family fits so few judgements"),
    "no judgements": ({"family": "Normal"}, "quantiles", "give at least one judgement"),
    "too many judgements": ({"quantiles": {str(i / 1000): float(i) for i in range(1, 150)}}, "quantiles",
                            "at most 100"),
    "df not positive": ({"family": "StudentT", "quantiles": {"0.05": 0.5, "0.5": 0.7}, "df": -1}, "df",
                        "positive finite number"),
    "df for a Normal": ({"family": "Normal", "quantiles": {"0.05": 0.5, "0.5": 0.7}, "df": 3}, "df",
                        "only StudentT has df"),
    "lower above upper": ({"quantiles": {"0.05": 0.5, "0.5": 0.7}, "lower": 1, "upper": 0}, "upper",
                          "must be greater than lower"),
    "value below lower": ({"quantiles": {"0.05": 0.5, "0.5": 0.7}, "lower": 0.6}, "quantiles.0.05",
                          "0.5 is below lower (0.6)"),
    "hint outside the support": ({"family": "Beta", "quantiles": {"0.05": 0.5, "0.5": 0.7}, "upper": 2}, "upper",
                                 "outside the support of Beta"),
    "unknown field": ({"quantile": {"0.5": 0.7}, "quantiles": {"0.5": 0.7}}, "quantile", "unknown field"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_inconsistent_input_is_a_spec_error_with_its_path(kind: str) -> None:
    body, path, fragment = BAD[kind]
    with pytest.raises(SpecError) as info:
        elicit(body)
    problems = {p.path: p.message for p in info.value.problems}
    assert path in problems, problems
    assert fragment in problems[path], problems[path]


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as info:
        elicit({"family": 3, "quantiles": {"2": 1, "0.5": math.nan}, "intervals": [{"low": 1, "high": 0, "mass": 2}]})
    assert {p.path for p in info.value.problems} == {"family", "quantiles.2", "quantiles.0.5", "intervals[0].mass"}


EXTREME: list[dict[str, Any]] = [
    {"quantiles": {"0.5": -1e150, "0.9": 1e150}},
    {"quantiles": {"1e-300": 1e-150, "0.5": 1e150}},
    {"quantiles": {"0.1": 0.5, "0.9": 0.5000000000001}},
    {"intervals": [{"low": 0, "high": 1e-300, "mass": 0.999}, {"low": 0, "high": 1e150, "mass": 1e-10}]},
    {"family": "Beta", "intervals": [{"low": 0, "high": 1, "mass": 0.5}, {"low": 0, "high": 0.5, "mass": 0.1}]},
    {"family": "Beta", "quantiles": {"0.01": 1e-300, "0.99": 1 - 1e-16}},
    {"family": "StudentT", "quantiles": {"0.01": -1e150, "0.5": 0, "0.99": 1e150}},
    {"quantiles": {"0.001": 0.001, "0.002": 1000, "0.999": 1000.0001}},
]


@pytest.mark.parametrize("body", EXTREME)
def test_extreme_judgements_give_finite_fits(body: dict[str, Any]) -> None:
    result = elicit(body)  # pytest turns any warning into an error: none may escape either
    for fit in result.fits:
        assert math.isfinite(fit.error) and 0 <= fit.error <= len(body.get("quantiles", {})) + len(
            body.get("intervals", []))
        assert all(math.isfinite(v) for v in fit.params.values())
        param_of(fit.spec)


NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-10, 10), st.floats(0, 1),
                   st.integers(-10**20, 10**20), st.text(max_size=3))
BODIES = st.fixed_dictionaries({}, optional={
    "family": st.sampled_from(["auto", *FAMILIES]),
    "quantiles": st.dictionaries(st.one_of(st.floats(0, 1).map(str), st.text(max_size=4)), NUMBERS, max_size=6),
    "intervals": st.lists(st.fixed_dictionaries({"low": NUMBERS, "high": NUMBERS, "mass": NUMBERS}), max_size=3),
    "df": NUMBERS, "lower": NUMBERS, "upper": NUMBERS,
})


@given(body=BODIES)
@settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_any_body_is_a_finite_fit_or_a_spec_error(body: dict[str, Any]) -> None:
    try:
        result = elicit(body)
    except SpecError as exc:
        assert exc.problems
        return
    for fit in result.fits:
        assert math.isfinite(fit.error) and all(math.isfinite(v) for v in fit.params.values()), fit


# --- the route


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    """The API (uvicorn in a thread), its Redis URL pointing where nothing listens: elicitation needs none."""
    app = create_app(ApiSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0",
                                 tokens=",".join(f"{t}:{n}" for n, t in TOKENS.items())))
    with api_in_thread(app) as url:
        yield url


@pytest.fixture
def client(api: str) -> Iterator[Client]:
    with Client(api, TOKENS["alice"]) as c:
        yield c


def test_route_fits_and_answers_best_first(client: Client) -> None:
    result = client.elicit(quantiles={0.5: 0.7}, intervals=[{"low": 0.5, "high": 0.85, "mass": 0.9}], lower=0,
                           upper=1)
    assert set(result) == {"fits", "best"}
    assert result["best"] == result["fits"][0]
    assert result["best"]["family"] == "Beta" and result["best"]["support"] == "unit"
    assert set(result["best"]["params"]) == {"concentration1", "concentration0"}
    direct = elicit({"quantiles": {"0.5": 0.7}, "intervals": [{"low": 0.5, "high": 0.85, "mass": 0.9}],
                     "lower": 0, "upper": 1})
    assert result["best"]["spec"] == direct.best.spec
    assert [f["family"] for f in result["fits"]] == [f.family for f in direct.fits]
    t = client.elicit("StudentT", quantiles={0.5: 0.0, 0.9: 2.0}, df=5)
    assert t["best"]["params"]["df"] == 5.0


def test_route_inconsistent_input_is_a_422_in_the_error_shape(client: Client) -> None:
    response = client.http.post("/v1/priors/elicit",
                                json={"family": "Beta", "quantiles": {"0.05": 0.5, "1.5": 0.9, "0.5": 0.4}})
    assert response.status_code == 422
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == "invalid_spec"
    paths = {d["path"]: d["message"] for d in body["error"]["details"]}
    assert set(paths) == {"quantiles.1.5", "quantiles"}
    assert "strictly between 0 and 1" in paths["quantiles.1.5"]
    assert "values must increase" in paths["quantiles"]
    with pytest.raises(ApiError) as info:  # the client's verb raises the same
        client.elicit("Beta", quantiles={0.05: -1, 0.5: 0.5})
    assert info.value.status == 422
    assert info.value.details == [{"path": "quantiles.0.05", "message": "-1 is outside the support of Beta (0, 1)"}]


def test_route_refuses_what_the_schema_does_not_allow(client: Client) -> None:
    response = client.http.post("/v1/priors/elicit", json={"quantiles": {"0.5": "much"}, "extra": 1})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert {d["path"] for d in error["details"]} == {"quantiles.0.5", "extra"}
    nan = client.http.post("/v1/priors/elicit", content=b'{"quantiles": {"0.5": NaN, "0.9": 1e999}}',
                           headers={"Content-Type": "application/json"})
    assert nan.status_code == 422
    assert {d["path"] for d in nan.json()["error"]["details"]} == {"quantiles.0.5", "quantiles.0.9"}


def test_route_needs_a_token(client: Client) -> None:
    response = client.http.post("/v1/priors/elicit", json={"quantiles": {"0.5": 1}}, headers={"Authorization": ""})
    assert response.status_code == 401


def test_route_is_in_the_openapi_document(client: Client) -> None:
    paths = client.http.get("/openapi.json").json()["paths"]
    operation = paths["/v1/priors/elicit"]["post"]
    assert operation["tags"] == ["priors"]
    for status in ("401", "422"):
        ref = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/ErrorResponse"
