"""The cost model: bytes per log-density evaluation and of results, figures checked by hand, limits refused."""

from __future__ import annotations

from typing import Any

import pytest

from service.config import Settings
from service.exceptions import SpecError
from service.language import cost
from service.language.cost import GRADIENT_FACTOR, Limits, Value
from service.language.loader import load_file
from service.sampler import SamplerSettings, check_cost, parse_job
from tests.conftest import EXAMPLES


def evaluation(spec: dict[str, Any]) -> cost.EvaluationCost:
    model, _ = parse_job(spec, limits=Limits(value_bytes=10**15, evaluation_bytes=10**15, result_bytes=10**15,
                                             chain_result_bytes=10**15))
    return cost.evaluation(model)


def problems_of(doc: Any, limits: Limits | None = None) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        parse_job(doc, limits=limits)
    return [(p.path, p.message) for p in info.value.problems]


def test_eight_schools_by_hand(eight_schools: dict[str, Any]) -> None:
    got = evaluation(eight_schools)
    assert got.values == (
        Value("params.mu", "mu: position, value and log density", (), 3),
        Value("params.tau", "tau: position, value and log density", (), 3),
        Value("params.theta", "theta: position, value and log density", (8,), 4),  # noncentered: +1
        Value("define.shrinkage", "tau + 10", ()),
        Value("define.shrinkage", "tau / (tau + 10)", ()),
        Value("define.shrinkage", "1 - (tau / (tau + 10))", ()),
        Value("observe.y", "log density of y", (8,)),
    )
    assert got.data_bytes == 2 * 8 * 8  # y and sigma, int64
    assert got.value_bytes == 8 * (3 + 3 + 4 * 8 + 3 + 8) == 392
    assert got.total_bytes == 128 + GRADIENT_FACTOR * 392 == 1304
    model, _ = parse_job(eight_schools)
    res = cost.result(model, chains=4, draws=1000, thin=1, keep=None)
    assert (res.kept_draws, res.kept_elements) == (1000, 1 + 1 + 8 + 1)
    assert res.chain_bytes == 1000 * (11 + 7) * 8 == 144_000 and res.total_bytes == 576_000


def test_gathers_products_and_broadcasts_by_hand() -> None:
    got = evaluation({
        "spec": 1,
        "data": {"county": [i % 10 for i in range(1000)], "x": [0.5] * 1000, "X": [[1.0] * 5] * 100,
                 "xc": [[0.5]] * 1000, "S": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], "z": [0.0, 0.0, 0.0]},
        "params": {"alpha": {"dist": "Normal(0, 1)", "shape": [10]}, "beta": {"dist": "Normal(0, 1)", "shape": [5]},
                   "w": "MultivariateNormal(z, covariance_matrix=S)"},
        "define": {"m": "alpha[county] * x", "f": "X @ beta", "o": "sum(exp(xc - alpha))"},
    })
    assert [(v.path, v.what, v.shape, v.bytes) for v in got.values] == [
        ("params.alpha", "alpha: position, value and log density", (10,), 80),
        ("params.beta", "beta: position, value and log density", (5,), 40),
        ("params.w", "Cholesky factor of the matrix", (3, 3), 72),
        ("params.w", "w: position, value and log density", (3,), 24),
        ("define.m", "alpha[county]", (1000,), 8000),  # a gather has the index's shape
        ("define.m", "alpha[county] * x", (1000,), 8000),
        ("define.f", "X @ beta", (100,), 800),
        ("define.o", "xc - alpha", (1000, 10), 80_000),  # broadcasting
        ("define.o", "exp(xc - alpha)", (1000, 10), 80_000),
        ("define.o", "sum(exp(xc - alpha))", (), 8),
    ]
    assert got.data_bytes == 8 * (1000 + 1000 + 500 + 1000 + 9 + 3)
    assert got.value_bytes == 3 * 80 + 3 * 40 + 72 + 3 * 24 + 8000 + 8000 + 800 + 80_000 + 80_000 + 8


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_examples_are_far_under_the_default_limits(example: str) -> None:
    model, settings = parse_job(load_file(EXAMPLES / example))
    got = cost.evaluation(model)
    res = cost.result(model, chains=settings.chains, draws=settings.draws, thin=settings.thin, keep=settings.keep)
    limits = Limits()
    assert max(v.bytes for v in got.values) * 1000 < limits.value_bytes
    assert got.total_bytes * 1000 < limits.evaluation_bytes
    assert res.chain_bytes * 50 < limits.chain_result_bytes and res.total_bytes * 100 < limits.result_bytes


def outer_product(n: int, op: str) -> dict[str, Any]:
    """The issue's attack: two params of n elements each (a 236-byte spec for n = 10000) and their outer product."""
    return {"spec": 1, "params": {"a": {"dist": "Normal(0, 1)", "shape": [n, 1]},
                                  "b": {"dist": "Normal(0, 1)", "shape": [1, n]}},
            "define": {"c": f"a {op} b"}}


def test_the_outer_product_that_killed_workers_is_refused_with_its_figures() -> None:
    spec = outer_product(10_000, "*")
    assert len(str(spec)) < 250
    got = evaluation(spec)
    assert got.values[-1] == Value("define.c", "a * b", (10_000, 10_000))
    assert got.values[-1].bytes == 800_000_000
    assert got.value_bytes == 2 * 3 * 80_000 + 800_000_000
    assert got.total_bytes == 3 * 800_480_000 == 2_401_440_000
    found = problems_of({"model": spec, "sampler": {"keep": ["a"]}})
    assert found == [
        ("model.define.c", "800 MB per evaluation (a * b, shape (10000, 10000)), limit 256 MB"),
        ("model", "2.4 GB per evaluation in all (data 0 bytes + 3 x 800 MB of values, for the gradient), limit 1 GB; "
                  "largest: define.c 800 MB, params.a 240 kB, params.b 240 kB"),
    ]


def test_a_matrix_product_of_outer_shape_is_refused() -> None:
    found = problems_of({"model": outer_product(100_000, "@"), "sampler": {"keep": ["a"]}})
    assert found[0] == ("model.define.c", "80 GB per evaluation (a @ b, shape (100000, 100000)), limit 256 MB")


def test_every_field_over_the_value_limit_is_named_once_with_its_largest_value() -> None:
    spec = {"spec": 1, "data": {"u": [[1.0]] * 2000, "v": [[1.0] * 2000], "y": [[0.0] * 2000] * 2},
            "params": {"s": "HalfNormal(1)"},
            "define": {"d": "exp(u * v) + 1"},
            "observe": {"y": "Normal(sum(u * v), s)"}}
    assert problems_of({"model": spec, "sampler": {"keep": ["s"]}}, Limits(value_bytes=10_000_000)) == [
        ("model.define.d", "32 MB per evaluation (u * v, shape (2000, 2000)), limit 10 MB"),
        ("model.observe.y", "32 MB per evaluation (u * v, shape (2000, 2000)), limit 10 MB"),
    ]


def test_results_over_redis_value_limit_are_refused_at_submit() -> None:
    """200k params x 400 draws: one chain's draws were over Redis' 512 MB value limit."""
    job = {"model": {"spec": 1, "params": {"x": {"dist": "Normal(0, 1)", "shape": [200_000]}}},
           "sampler": {"draws": 400}}
    assert problems_of(job) == [
        ("sampler.draws", "results of 640 MB per chain (400 kept draws x (200000 elements + 7 sample stats) x 8 "
                          "bytes), limit 128 MB; ask for fewer draws, a larger thin, or fewer variables in keep"),
        ("sampler.draws", "results of 2.56 GB per job (4 chains x 400 kept draws x (200000 elements + 7 sample "
                          "stats) x 8 bytes), limit 1 GB; ask for fewer draws, a larger thin, or fewer variables in "
                          "keep"),
    ]
    model, _ = parse_job({**job, "sampler": {"draws": 400, "thin": 6}})  # 67 kept draws: 107 MB per chain
    assert cost.result(model, chains=4, draws=400, thin=6, keep=None).chain_bytes == 67 * 200_007 * 8


def test_keep_and_thin_shrink_results(eight_schools: dict[str, Any]) -> None:
    model, _ = parse_job(eight_schools)
    assert cost.result(model, chains=2, draws=1000, thin=3, keep=["mu", "theta"]) == cost.ResultCost(2, 334, 9)
    assert cost.result(model, chains=2, draws=1000, thin=3, keep=["mu", "theta"]).total_bytes == 2 * 334 * 16 * 8


def test_limits_come_from_settings(monkeypatch: pytest.MonkeyPatch, eight_schools: dict[str, Any]) -> None:
    monkeypatch.setenv("CHAINYARD_MAX_CHAIN_RESULT_BYTES", "100000")
    limits = Settings().cost_limits()
    assert limits == Limits(chain_result_bytes=100_000)
    found = problems_of({"model": eight_schools}, limits)
    assert found == [("sampler.draws", "results of 144 kB per chain (1000 kept draws x (11 elements + 7 sample "
                                        "stats) x 8 bytes), limit 100 kB; ask for fewer draws, a larger thin, or "
                                        "fewer variables in keep")]
    parse_job({"model": eight_schools, "sampler": {"draws": 500}}, limits=limits)
    model, settings = parse_job(eight_schools)
    longer = SamplerSettings(draws=5000)
    assert [p.path for p in check_cost(model, longer, limits)] == ["sampler.draws"]
    assert [p.path for p in check_cost(model, settings, Limits(evaluation_bytes=1000), in_job=False)] == [""]


@pytest.mark.parametrize(("n", "text"), [(0, "0 bytes"), (999, "999 bytes"), (1000, "1 kB"), (240_000, "240 kB"),
                                         (800_000_000, "800 MB"), (999_999_999, "1000 MB"),
                                         (2_560_089_600, "2.56 GB"), (80 * 10**12, "80000 GB")])
def test_size_text(n: int, text: str) -> None:
    assert cost.size_text(n) == text


def test_figures_do_not_depend_on_the_data_values(eight_schools: dict[str, Any]) -> None:
    other = {**eight_schools, "data": {"y": [0.5] * 8, "sigma": [1.5] * 8}}
    assert evaluation(other).values == evaluation(eight_schools).values


def test_a_chains_stored_state_is_bounded_by_the_dense_mass_matrix() -> None:
    """Every round's end stores each chain's full sampler state with the job: with a dense mass matrix it grows
    as the square of the parameters, so above the per-chain result limit the job is refused naming
    sampler.dense_mass; the diagonal one is small."""
    def job(n: int, dense: bool) -> dict[str, Any]:
        return {"model": {"spec": 1, "data": {"y": [0.0]}, "params": {"b": {"dist": "Normal(0, 1)", "shape": [n]}},
                          "observe": {"y": "Normal(sum(b), 1)"}}, "sampler": {"dense_mass": dense, "draws": 10}}

    model, _ = parse_job(job(3000, False))
    assert cost.state_bytes(model, dense_mass=False) == 8 * 7 * 3000
    assert cost.state_bytes(model, dense_mass=True) == 8 * (3 * 3000 + 4 * 3000**2)
    parse_job(job(3000, False))
    parse_job(job(1500, True))  # 72 MB of state per chain
    with pytest.raises(SpecError) as caught:
        parse_job(job(3000, True))
    [problem] = caught.value.problems
    assert problem.path == "sampler.dense_mass"
    assert "dense mass matrix over 3000 parameters makes each chain's sampler state 288 MB, limit 128 MB" in \
        problem.message
