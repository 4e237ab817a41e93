"""Write tests/posteriordb/data/ and reference/ from a stan-dev/posteriordb checkout (run by hand, not by tests).

    python tests/posteriordb/build.py [--repo /work/.mirror/stan-dev+posteriordb/repo] [posterior ...]

For each ported posterior: data/<posterior>.json (.json.gz when large) holds the data fields its spec uses (Stan's
`transformed data` computed here, as the Stan program does), reference/<posterior>.json holds, per Stan parameter
element, the reference draws' mean, sd, 5/25/50/75/95% quantiles and their Monte Carlo standard errors (ArviZ,
chains stacked as (chain, draw)) and the tails' Pareto shape `khat`. The repository is read with
`git show HEAD:<path>` (a bare mirror works).

Summary-only references (SUMMARY_ONLY: mcycle_gp-accel_gp, whose draws file is absent from the mirror) come from
posteriordb's summary statistics instead of draws: per element, from reference_posteriors/summary_statistics'
mean_value (E[x]) and mean_squared_value (E[x^2]) and the draws' info file (n draws, effective_sample_size_bulk
ess), mean = E[x], sd = sqrt((E[x^2] - E[x]^2) n / (n - 1)), mcse_mean = sd / sqrt(ess) and mcse_sd = sd / sqrt(2
(ess - 1)) (the normal-theory value); no quantiles and no `khat` (unknown without draws), so the test checks the
moments. The three files' element names must equal, in order, those of the posterior's `dimensions`.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

HERE = Path(__file__).resolve().parent
DEFAULT_REPO = "/work/.mirror/stan-dev+posteriordb/repo"
DB = "posterior_database"
GZIP_ABOVE = 200_000  # bytes of JSON: larger data is written gzipped (data/<posterior>.json.gz)

Data = dict[str, Any]


def _log(d: Data, *names: str) -> Data:
    return {f"log_{n}": np.log(np.asarray(d[n], dtype=float)) for n in names}


def kidiq(*names: str) -> Callable[[Data], Data]:
    def f(d: Data) -> Data:
        out = {n: d[n] for n in ("kid_score", *names)}
        if "inter" in names:
            out["inter"] = np.asarray(d["mom_hs"], dtype=float) * np.asarray(d["mom_iq"], dtype=float)
        return out
    return f


def kidiq_interaction(d: Data) -> Data:
    return {"kid_score": d["kid_score"], "mom_hs": d["mom_hs"], "mom_iq": d["mom_iq"],
            "inter": np.asarray(d["mom_hs"], dtype=float) * np.asarray(d["mom_iq"], dtype=float)}


def earnings(kind: str) -> Callable[[Data], Data]:
    def f(d: Data) -> Data:
        earn = np.asarray(d["earn"], dtype=float)
        height = np.asarray(d["height"], dtype=float)
        male = np.asarray(d["male"], dtype=float)
        if kind == "earn_height":
            return {"earn": earn, "height": height}
        if kind == "log10earn_height":
            return {"log10_earn": np.log10(earn), "height": height}
        out: Data = {"log_earn": np.log(earn)}
        if kind == "logearn_height":
            out["height"] = height
        elif kind == "logearn_height_male":
            out.update(height=height, male=male)
        elif kind == "logearn_interaction":
            out.update(height=height, male=male, inter=height * male)
        elif kind == "logearn_interaction_z":
            z = (height - height.mean()) / height.std(ddof=1)  # Stan's sd() divides by N - 1
            out.update(z_height=z, male=male, inter=z * male)
        elif kind == "logearn_logheight_male":
            out.update(log_height=np.log(height), male=male)
        return out
    return f


def mesquite(kind: str) -> Callable[[Data], Data]:
    def f(d: Data) -> Data:
        a = {k: np.asarray(v, dtype=float) for k, v in d.items() if isinstance(v, list)}
        if kind == "mesquite":
            return {k: a[k] for k in ("weight", "diam1", "diam2", "canopy_height", "total_height", "density",
                                      "group")}
        out: Data = {"log_weight": np.log(a["weight"])}
        volume = np.log(a["diam1"] * a["diam2"] * a["canopy_height"])
        area = np.log(a["diam1"] * a["diam2"])
        shape = np.log(a["diam1"] / a["diam2"])
        if kind == "logmesquite":
            out.update(_log(a, "diam1", "diam2", "canopy_height", "total_height", "density"), group=a["group"])
        elif kind == "logmesquite_logva":
            out.update(log_canopy_volume=volume, log_canopy_area=area, group=a["group"])
        elif kind == "logmesquite_logvas":
            out.update(log_canopy_volume=volume, log_canopy_area=area, log_canopy_shape=shape,
                       log_total_height=np.log(a["total_height"]), log_density=np.log(a["density"]),
                       group=a["group"])
        elif kind == "logmesquite_logvash":
            out.update(log_canopy_volume=volume, log_canopy_area=area, log_canopy_shape=shape,
                       log_total_height=np.log(a["total_height"]), group=a["group"])
        elif kind == "logmesquite_logvolume":
            out.update(log_canopy_volume=volume)
        return out
    return f


def ark(d: Data) -> Data:
    # y[t] ~ normal(alpha + sum_k beta[k] * y[t - k], sigma) for t in K + 1 .. T (1-based): the lags as a matrix
    y = np.asarray(d["y"], dtype=float)
    k, t = int(d["K"]), int(d["T"])
    lags = np.stack([y[k - j - 1:t - j - 1] for j in range(k)], axis=1)  # lags[i, j] = y[k + i - j - 1] (0-based)
    return {"y_obs": y[k:], "lags": lags}


def mom_work(kind: str) -> Callable[[Data], Data]:
    def f(d: Data) -> Data:
        score = d["kid_score"]
        hs, iq = np.asarray(d["mom_hs"], dtype=float), np.asarray(d["mom_iq"], dtype=float)
        if kind == "kidscore_mom_work":
            work = np.asarray(d["mom_work"])
            return {"kid_score": score, **{f"work{k}": (work == k).astype(float) for k in (2, 3, 4)}}
        if kind == "kidscore_interaction_c":
            a, b = hs - hs.mean(), iq - iq.mean()
        elif kind == "kidscore_interaction_c2":
            a, b = hs - 0.5, iq - 100
        else:  # kidscore_interaction_z
            a, b = (hs - hs.mean()) / (2 * hs.std(ddof=1)), (iq - iq.mean()) / (2 * iq.std(ddof=1))
        return {"kid_score": score, "x_mom_hs": a, "x_mom_iq": b, "inter": a * b}
    return f


def nes(d: Data) -> Data:
    age = np.asarray(d["age_discrete"])
    out = {k: d[k] for k in ("partyid7", "real_ideo", "race_adj", "educ1", "gender", "income")}
    out.update(age30_44=(age == 2).astype(float), age45_64=(age == 3).astype(float), age65up=(age == 4).astype(float))
    return out


def diamonds(d: Data) -> Data:
    x = np.asarray(d["X"], dtype=float)[:, 1:]  # brms: the design matrix without its intercept column, centred
    return {"Y": d["Y"], "Xc": x - x.mean(axis=0)}


def mcycle_gp(d: Data) -> Data:
    # brms' approximate GPs with Dgp_1 = Dgp_sigma_1 = 1: slambda (NB x 1) as a vector (the eigenvalues' square roots)
    assert d["Dgp_1"] == d["Dgp_sigma_1"] == 1
    return {"Y": d["Y"], "Xgp_1": d["Xgp_1"], "slambda_1": np.asarray(d["slambda_1"], dtype=float)[:, 0],
            "Xgp_sigma_1": d["Xgp_sigma_1"], "slambda_sigma_1": np.asarray(d["slambda_sigma_1"], dtype=float)[:, 0]}


def keep(*names: str) -> Callable[[Data], Data]:
    return lambda d: {n: d[n] for n in names}


PORTED: dict[str, Callable[[Data], Data]] = {
    "eight_schools-eight_schools_noncentered": keep("y", "sigma"),
    "kidiq-kidscore_momiq": kidiq("mom_iq"),
    "kidiq-kidscore_momhs": kidiq("mom_hs"),
    "kidiq-kidscore_momhsiq": kidiq("mom_hs", "mom_iq"),
    "kidiq-kidscore_interaction": kidiq_interaction,
    **{f"earnings-{k}": earnings(k) for k in ("earn_height", "log10earn_height", "logearn_height",
                                               "logearn_height_male", "logearn_interaction",
                                               "logearn_interaction_z", "logearn_logheight_male")},
    **{f"mesquite-{k}": mesquite(k) for k in ("logmesquite", "logmesquite_logva", "logmesquite_logvas",
                                               "logmesquite_logvash", "logmesquite_logvolume", "mesquite")},
    "kilpisjarvi_mod-kilpisjarvi": keep("x", "y", "pmualpha", "psalpha", "pmubeta", "psbeta"),
    "arma-arma11": keep("y", "T"),
    "garch-garch11": keep("y", "T", "sigma1"),
    "arK-arK": ark,
    **{f"kidiq_with_mom_work-{k}": mom_work(k) for k in ("kidscore_interaction_c", "kidscore_interaction_c2",
                                                           "kidscore_interaction_z", "kidscore_mom_work")},
    **{f"nes{year}-nes": nes for year in range(1972, 2001, 4)},
    "sblrc-blr": keep("X", "y"),
    "sblri-blr": keep("X", "y"),
    "low_dim_gauss_mix-low_dim_gauss_mix": keep("y"),
    "gp_pois_regr-gp_regr": keep("x", "y"),
    "gp_pois_regr-gp_pois_regr": keep("x", "k"),
    "bball_drive_event_0-hmm_drive_0": lambda d: {"u": d["u"], "v": d["v"], "N": d["N"], "alpha": d["alpha"],
                                                   "ones": [1.0, 1.0]},
    "bball_drive_event_1-hmm_drive_1": lambda d: {"u": d["u"], "v": d["v"], "N": d["N"], "alpha": d["alpha"],
                                                   "tau": d["tau"], "rho": d["rho"], "ones": [1.0, 1.0]},
    "one_comp_mm_elim_abs-one_comp_mm_elim_abs": lambda d: {"times": d["times"], "C_hat": d["C_hat"], "D": d["D"],
                                                             "V": d["V"], "C0": [0.0]},
    "diamonds-diamonds": diamonds,
    "hmm_example-hmm_example": lambda d: {"y": d["y"], "N": d["N"], "ones": [1.0, 1.0]},
    "mcycle_gp-accel_gp": mcycle_gp,
    "hudson_lynx_hare-lotka_volterra": keep("ts", "y_init", "y"),
}
# Posteriors whose reference draws are absent from the mirror: their references come from summary statistics
SUMMARY_ONLY = frozenset({"mcycle_gp-accel_gp"})


def show(repo: str, path: str) -> bytes:
    return subprocess.run(["git", "-C", repo, "show", f"HEAD:{path}"], check=True, capture_output=True).stdout


def unzip_json(blob: bytes) -> Any:
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        (name,) = z.namelist()
        return json.loads(z.read(name))


def plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, float):
        return round(v, 12)
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def tail_khat(x: np.ndarray) -> float:
    """The larger of the two tails' Pareto shape estimates (PSIS's generalized Pareto fit to the largest values of
    x and of -x): above 0.25 the fourth moment is infinite, so an sd's Monte Carlo error cannot be estimated; above
    0.5 the same holds for the mean."""
    x = x.ravel()
    return max(float(az.psislw(np.log(t - t.min() + 1e-300))[1]) for t in (x, -x))


def reference(chains: list[dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    out = {}
    for name in chains[0]:
        x = np.array([c[name] for c in chains], dtype=float)  # (chain, draw)
        ds = az.convert_to_dataset({"x": x})
        out[name] = {
            "mean": float(x.mean()),
            "sd": float(x.std(ddof=1)),
            "mcse_mean": float(az.mcse(ds, method="mean")["x"]),
            "mcse_sd": float(az.mcse(ds, method="sd")["x"]),
            "khat": tail_khat(x),
        }
        for q in QUANTILES:
            out[name][f"q{q:g}"] = float(np.quantile(x, q))
            out[name][f"mcse_q{q:g}"] = float(az.mcse(ds, method="quantile", prob=q)["x"])
    return out


def stan_names(dimensions: dict[str, int]) -> list[str]:
    """Element names of posteriordb's `dimensions` (scalars and vectors), in order: `x`, or `x[1]`, `x[2]`, ..."""
    return [n if k == 1 else f"{n}[{i}]" for n, k in dimensions.items() for i in range(1, k + 1)]


def summary_reference(repo: str, name: str, dimensions: dict[str, int]) -> dict[str, dict[str, float]]:
    """A reference from posteriordb's summary statistics, for a posterior without reference draws (the module's
    docstring says how): mean, sd, mcse_mean and mcse_sd per element; no quantiles, no khat."""
    stats = f"{DB}/reference_posteriors/summary_statistics"
    means = json.loads(show(repo, f"{stats}/mean_value/mean_value/{name}.json"))
    squares = json.loads(show(repo, f"{stats}/mean_squared_value/mean_squared_value/{name}.json"))
    diag = json.loads(show(repo, f"{DB}/reference_posteriors/draws/info/{name}.info.json"))["diagnostics"]
    names = means["names"]
    if not names == squares["names"] == diag["diagnostic_information"]["names"] == stan_names(dimensions):
        raise SystemExit(f"{name}: the summary statistics' element names differ from each other or from the "
                         "posterior's dimensions")
    n = int(diag["ndraws"])
    mean = np.asarray(means["mean_value"], dtype=float)
    sd = np.sqrt((np.asarray(squares["mean_squared_value"], dtype=float) - mean ** 2) * n / (n - 1))
    ess = np.asarray(diag["effective_sample_size_bulk"], dtype=float)
    out = {k: {"mean": float(mean[i]), "sd": float(sd[i]), "mcse_mean": float(sd[i] / np.sqrt(ess[i])),
               "mcse_sd": float(sd[i] / np.sqrt(2 * (ess[i] - 1)))} for i, k in enumerate(names)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=DEFAULT_REPO)
    parser.add_argument("posteriors", nargs="*", help="default: every ported posterior")
    args = parser.parse_args(argv)
    for name in args.posteriors or list(PORTED):
        info = json.loads(show(args.repo, f"{DB}/posteriors/{name}.json"))
        data = unzip_json(show(args.repo, f"{DB}/data/data/{info['data_name']}.json.zip"))
        fields = {k: plain(v) for k, v in PORTED[name](data).items()}
        text = (json.dumps(fields, separators=(",", ":")) + "\n").encode()
        for old in (HERE / "data").glob(f"{name}.json*"):
            old.unlink()
        if len(text) > GZIP_ABOVE:
            (HERE / "data" / f"{name}.json.gz").write_bytes(gzip.compress(text, compresslevel=9, mtime=0))
        else:
            (HERE / "data" / f"{name}.json").write_bytes(text)
        if name in SUMMARY_ONLY:
            ref = summary_reference(args.repo, name, info["dimensions"])
        else:
            ref = reference(unzip_json(show(args.repo, f"{DB}/reference_posteriors/draws/draws/{name}.json.zip")))
        ref = {k: {kk: float(f"{vv:.6g}") for kk, vv in v.items()} for k, v in ref.items()}
        (HERE / "reference" / f"{name}.json").write_text(json.dumps(ref, indent=1) + "\n")
        print(f"{name}: {len(fields)} data fields, {len(ref)} reference elements", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
