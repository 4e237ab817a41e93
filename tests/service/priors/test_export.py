"""The export a refit publishes, against draws of known distributions (Monte Carlo error bounds stated)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from service.priors.export import ExportSettings, fit, unconstrain

MEAN = np.array([0.5, -1.0, 2.0, 0.3])
COV = np.array([[0.20, 0.05, 0.00, 0.02],
                [0.05, 0.10, 0.03, 0.00],
                [0.00, 0.03, 0.30, 0.05],
                [0.02, 0.00, 0.05, 0.15]])
N = 40_000  # 4 chains x 10,000 independent draws


def _draws(seed: int = 1) -> tuple[dict[str, np.ndarray], dict[str, str], np.ndarray]:
    """mu real scalar, tau positive scalar, beta real (2,), as (chain, draw, *shape): mvn on the unconstrained
    vector [mu, log tau, beta0, beta1]."""
    u = np.random.default_rng(seed).multivariate_normal(MEAN, COV, size=N)
    draws = {"mu": u[:, 0].reshape(4, -1), "tau": np.exp(u[:, 1]).reshape(4, -1),
             "beta": u[:, 2:].reshape(4, -1, 2)}
    return draws, {"mu": "real", "tau": "positive", "beta": "real"}, u


def test_mvn_reproduces_mean_and_covariance_on_the_unconstrained_scale() -> None:
    draws, supports, u = _draws()
    out = fit(draws, supports, ExportSettings(params=("mu", "tau", "beta")))
    assert [m["name"] for m in out["members"]] == ["mu", "tau", "beta"]
    assert [m["shape"] for m in out["members"]] == [[], [], [2]]
    comp, = out["components"]
    assert comp["weight"] == 1.0
    # the mean of N independent draws: within 4 standard errors of the truth
    assert np.all(np.abs(np.asarray(comp["loc"]) - MEAN) < 4 * np.sqrt(np.diag(COV) / N))
    tril = np.asarray(comp["scale_tril"])
    cov = tril @ tril.T
    # a sample covariance entry's standard error: sqrt((s_ii s_jj + s_ij^2) / N)
    se = np.sqrt((np.outer(np.diag(COV), np.diag(COV)) + COV**2) / N)
    assert np.all(np.abs(cov - COV) < 4 * se)
    assert np.allclose(cov, np.cov(u, rowvar=False), rtol=1e-12, atol=1e-14)  # exactly the draws' covariance
    assert out["regularized"] == 0.0


def test_inflation_multiplies_the_covariance_exactly() -> None:
    draws, supports, _ = _draws()
    plain = fit(draws, supports, ExportSettings(params=("mu", "tau", "beta")))
    inflated = fit(draws, supports, ExportSettings(params=("mu", "tau", "beta"), inflate=2.5))
    a, b = (np.asarray(x["components"][0]["scale_tril"]) for x in (plain, inflated))
    np.testing.assert_allclose(b @ b.T, 2.5 * (a @ a.T), rtol=1e-12)
    assert inflated["components"][0]["loc"] == plain["components"][0]["loc"]
    assert inflated["cov"] == plain["cov"]  # the fitted moments are kept as they were


def test_robust_mixing_keeps_the_stated_weight() -> None:
    draws, supports, _ = _draws()
    out = fit(draws, supports, ExportSettings(params=("mu", "tau"), robust_weight=0.2, robust_scale=10))
    informative, vague = out["components"]
    assert (informative["weight"], vague["weight"]) == (0.8, 0.2)
    assert vague["loc"] == informative["loc"]
    np.testing.assert_allclose(np.asarray(vague["scale_tril"]), 10 * np.asarray(informative["scale_tril"]))
    assert out["robust"] == {"weight": 0.2, "scale": 10}


def test_marginal_families_by_support() -> None:
    rng = np.random.default_rng(3)
    p = rng.beta(12.0, 8.0, size=N).reshape(4, -1)
    draws, supports, _ = _draws()
    draws["p"] = p
    supports["p"] = "unit"
    out = fit(draws, supports, ExportSettings(params=("mu", "tau", "p"), method="marginal", robust_weight=0.1))
    (mu_main, mu_vague), (tau_main, _), (p_main, p_vague) = out["marginals"]
    assert mu_main["dist"] == "Normal" and tau_main["dist"] == "LogNormal" and p_main["dist"] == "Beta"
    assert (mu_main["weight"], mu_vague["weight"]) == (0.9, 0.1)
    assert abs(mu_main["args"]["loc"] - MEAN[0]) < 4 * np.sqrt(COV[0, 0] / N)
    assert abs(tau_main["args"]["scale"] - np.sqrt(COV[1, 1])) < 4 * np.sqrt(COV[1, 1] / (2 * N))
    a, b = p_main["args"]["concentration1"], p_main["args"]["concentration0"]
    assert abs(a / (a + b) - 0.6) < 4 * np.sqrt(stats.beta(12, 8).var() / N)
    assert abs(a + b - 20) < 1.0  # moments match Beta(12, 8) (method of moments' error at N draws is ~0.2)
    assert p_vague["args"] == {"concentration1": 1.0, "concentration0": 1.0}


def test_a_singular_covariance_is_regularized_and_reported() -> None:
    draws, supports, _ = _draws()
    draws["twice"] = 2 * draws["mu"]  # perfectly correlated with mu
    supports["twice"] = "real"
    out = fit(draws, supports, ExportSettings(params=("mu", "twice")))
    assert out["regularized"] > 0
    tril = np.asarray(out["components"][0]["scale_tril"])
    assert np.all(np.diag(tril) > 0)


@pytest.mark.parametrize(("support", "x", "u"), [
    ("real", -1.5, -1.5), ("positive", np.e, 1.0), ("unit", 0.5, 0.0),
    ("interval(2.0, 4.0)", 3.0, 0.0), ("interval(-1.0, 1.0)", 1 / (1 + np.exp(-0.7)) * 2 - 1, 0.7)])
def test_unconstrain_inverts_numpyros_bijections(support: str, x: float, u: float) -> None:
    assert unconstrain(np.asarray(x), support) == pytest.approx(u)


def test_marginal_refuses_supports_it_cannot_fit() -> None:
    draws, supports, _ = _draws()
    supports["mu"] = "interval(0.0, 2.0)"
    draws["mu"] = np.full_like(draws["mu"], 1.0) + 0.1 * np.tanh(draws["mu"])
    with pytest.raises(ValueError, match="marginal"):
        fit(draws, supports, ExportSettings(params=("mu",), method="marginal"))
