"""Writes the ODE examples (fixed seeds, so the files are reproducible).

    python examples/ode/simulate.py      # rewrites lotka_volterra.yaml, one_compartment.yaml, population_pk.yaml

Lotka-Volterra follows Carpenter's Stan case study (predator-prey populations, lognormal errors); the
pharmacokinetic models are the classic one-compartment model with first-order absorption of an oral dose,
for one subject and for a population whose clearances are partially pooled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy.integrate import solve_ivp

HERE = Path(__file__).parent
LV_RHS = "stack(alpha * state[0] - beta * state[0] * state[1], -gamma * state[1] + delta * state[0] * state[1])"


def lotka_volterra(seed: int = 1) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    alpha, beta, gamma, delta, z0, sigma = 0.55, 0.028, 0.8, 0.024, [33.0, 6.0], 0.25
    ts = np.arange(1.0, 21.0)

    def rhs(t: float, z: np.ndarray) -> list[float]:
        return [alpha * z[0] - beta * z[0] * z[1], -gamma * z[1] + delta * z[0] * z[1]]

    z = solve_ivp(rhs, (0.0, ts[-1]), z0, t_eval=ts, rtol=1e-10, atol=1e-10).y.T
    y = np.exp(np.log(z) + rng.normal(0, sigma, z.shape))
    return {
        "spec": 1, "name": "lotka_volterra",
        "data": {"ts": ts.tolist(), "y": np.round(y, 3).tolist()},
        "coords": {"species": ["prey", "predator"]},
        "params": {
            "alpha": "LogNormal(0, 0.5)", "beta": "LogNormal(-3, 0.5)",
            "gamma": "LogNormal(0, 0.5)", "delta": "LogNormal(-3, 0.5)",
            "z_init": {"dist": "LogNormal(log(10), 1)", "dims": ["species"]},
            "sigma": {"dist": "LogNormal(-1, 1)", "dims": ["species"]},
        },
        "define": {"z": {"expr": f"ode({LV_RHS}, z_init, ts, rtol=1e-6, atol=1e-6)", "keep": False},
                   "z_pos": {"expr": "maximum(z, 1e-9)", "keep": False}},
        "observe": {"y": "LogNormal(log(z_pos), sigma)"},
    }


def _bateman(dose: np.ndarray, ka: float, cl: np.ndarray, v: float, ts: np.ndarray) -> np.ndarray:
    k = cl / v
    return dose * ka / (v * (ka - k)) * (np.exp(-np.outer(ts, k)) - np.exp(-ka * ts)[:, None])


def one_compartment(seed: int = 2) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    ka, cl, v, sigma, dose = 1.1, 4.0, 25.0, 0.15, 100.0
    ts = np.array([0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0])
    conc = _bateman(np.asarray(dose), ka, np.asarray([cl]), v, ts)[:, 0] * np.exp(rng.normal(0, sigma, ts.size))
    return {
        "spec": 1, "name": "one_compartment_pk",
        "data": {"ts": ts.tolist(), "dose": dose, "conc": np.round(conc, 4).tolist()},
        "params": {"ka": "LogNormal(0, 0.5)", "CL": "LogNormal(log(5), 0.5)", "V": "LogNormal(log(30), 0.5)",
                   "sigma": "HalfNormal(0.5)"},
        "define": {
            # amounts in the gut and in the central compartment, then the concentration there
            "amounts": {"expr": "ode(stack(-ka * state[0], ka * state[0] - CL / V * state[1]), stack(dose, 0.0), ts, "
                                "atol=1e-8)",
                        "keep": False},
            # amounts decay towards 0, where the solver's absolute error can make them slightly negative
            "conc_hat": "maximum(amounts[:, 1], 1e-12) / V",
        },
        "observe": {"conc": "LogNormal(log(conc_hat), sigma)"},
    }


def population_pk(subjects: int = 8, seed: int = 3) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    ka, log_cl, omega, v, sigma = 1.1, np.log(4.0), 0.3, 25.0, 0.15
    ts = np.array([0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 12.0])
    dose = rng.choice([50.0, 100.0, 200.0], size=subjects)
    cl = np.exp(log_cl + rng.normal(0, omega, subjects))
    conc = _bateman(dose, ka, cl, v, ts) * np.exp(rng.normal(0, sigma, (ts.size, subjects)))
    return {
        "spec": 1, "name": "population_pk",
        "data": {"ts": ts.tolist(), "dose": dose.tolist(), "zero": [0.0] * subjects,
                 "conc": np.round(conc, 4).tolist()},
        "coords": {"subject": [f"s{j + 1}" for j in range(subjects)]},
        "params": {
            "ka": "LogNormal(0, 0.5)", "V": "LogNormal(log(30), 0.5)",
            "log_CL": "Normal(log(5), 1)",  # the population's typical clearance, on the log scale
            "omega": "HalfNormal(0.5)",  # between-subject spread of log clearance
            "eta": {"dist": "Normal(0, omega)", "dims": ["subject"], "reparam": "noncentered"},
            "sigma": "HalfNormal(0.5)",
        },
        "define": {
            "CL": {"expr": "exp(log_CL + eta)", "dims": ["subject"]},
            # every subject's gut and central amounts at once: state is (subjects, 2)
            "amounts": {"expr": "ode(stack(-ka * state[:, 0], ka * state[:, 0] - CL / V * state[:, 1], axis=-1), "
                                "stack(dose, zero, axis=-1), ts, atol=1e-8)", "keep": False},
            "conc_hat": {"expr": "maximum(amounts[:, :, 1], 1e-12) / V", "keep": False},
        },
        "observe": {"conc": "LogNormal(log(conc_hat), sigma)"},
    }


HEADER = {
    "lotka_volterra": "# Lotka-Volterra predator-prey dynamics (Carpenter, Stan case study), solved by `ode`.",
    "one_compartment": "# One-compartment pharmacokinetics, first-order absorption of an oral dose, by `ode`.",
    "population_pk": "# Population pharmacokinetics: subjects' clearances partially pooled, one `ode` for all.",
}


def main() -> None:
    for name, make in (("lotka_volterra", lotka_volterra), ("one_compartment", one_compartment),
                       ("population_pk", population_pk)):
        text = HEADER[name] + f"\n# Run it:  chainyard run examples/ode/{name}.yaml\n" + \
            "# Generated by examples/ode/simulate.py (simulated data, fixed seed).\n"
        (HERE / f"{name}.yaml").write_text(text + json.dumps(make(), indent=1) + "\n")


if __name__ == "__main__":
    main()
