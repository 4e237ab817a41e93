"""Writes the hospitals walk-through's cohorts (fixed seed, so the files are reproducible).

    python examples/hospitals/simulate.py

Each cohort is 20 new hospitals with their patients and deaths in one year; a hospital's log-odds of death
is drawn from one population, Normal(MU, TAU). The new small hospital has 12 patients.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
MU, TAU = -2.2, 0.45


def main() -> None:
    rng = np.random.default_rng(2026)
    for c in range(1, 4):
        with (HERE / f"cohort{c}.csv").open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["hospital", "patients", "deaths"])
            for h in range(20):
                patients = int(rng.integers(40, 400))
                p = 1 / (1 + np.exp(-rng.normal(MU, TAU)))
                out.writerow([f"H{(c - 1) * 20 + h + 1:02d}", patients, int(rng.binomial(patients, p))])


if __name__ == "__main__":
    main()
