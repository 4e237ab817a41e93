"""`chainyard run` and `chainyard validate` (cli/fit.py) as a user calls them: real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from service.language.loader import load_file
from service.sampler import parse_job
from tests.conftest import EXAMPLES, subprocess_env

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

CHAINYARD = [sys.executable, "-m", "cli"]


def run(args: list[str], compile_cache: Path, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CHAINYARD, *args], capture_output=True, text=True, env=subprocess_env(compile_cache),
                          timeout=600, **kw)  # type: ignore[call-overload]


@pytest.mark.usefixtures("jax_ready")
def test_run_writes_netcdf_and_summary_equal_to_in_process_fit(tmp_path: Path, compile_cache: Path) -> None:
    out, summary = tmp_path / "fit.nc", tmp_path / "summary.json"
    done = run(["run", str(EXAMPLES / "eight_schools.yaml"), "--seed", "4", "--warmup", "300", "--draws", "400",
                "--out", str(out), "--json", str(summary)], compile_cache)
    assert done.returncode == 0, done.stderr
    assert "theta[Choate]" in done.stdout and "r_hat" in done.stdout
    idata = az.from_netcdf(str(out))
    assert set(idata.groups()) >= {"posterior", "sample_stats", "observed_data"}
    theta = idata.posterior["theta"]
    assert theta.dims == ("chain", "draw", "school") and theta.shape == (4, 400, 8)
    assert list(theta["school"].values[:2]) == ["Choate", "Deerfield"]
    assert {"diverging", "tree_depth", "step_size", "energy", "lp", "acceptance_rate"} <= set(idata.sample_stats)
    assert np.array_equal(idata.observed_data["y"].values, [28, 8, -3, 7, -1, 1, 18, 12])
    result = json.loads(summary.read_text())
    rows = {r["variable"]: r for r in result["variables"]}
    assert {"mean", "sd", "hdi_3%", "hdi_97%", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"} <= set(rows["mu"])
    assert result["totals"]["max_rhat"] == max(r["r_hat"] for r in rows.values())
    assert result["seed"] == 4
    # the same job in this process gives the same draws, bit for bit
    from workers.engine import Engine

    model, settings = parse_job(load_file(EXAMPLES / "eight_schools.yaml"))
    fit = Engine().run(model, settings.model_copy(update={"seed": 4, "warmup": 300, "draws": 400}))
    for name in ("mu", "tau", "theta", "shrinkage"):
        assert np.array_equal(fit.draws[name], idata.posterior[name].values), name


def test_bad_spec_exits_2_naming_the_field_and_runs_nothing(tmp_path: Path, compile_cache: Path) -> None:
    spec = load_file(EXAMPLES / "eight_schools.yaml")
    spec["params"]["tau"] = "HalfCauchy(-5)"
    spec["observe"]["y"] = "Normal(theta[9], sigma)"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(spec))
    out = tmp_path / "fit.nc"
    done = run(["run", str(bad), "--out", str(out), "--checkpoint-dir", str(tmp_path / "ck")], compile_cache)
    assert done.returncode == 2
    assert "params.tau: HalfCauchy: scale must be positive" in done.stderr
    assert "observe.y: index 9 out of range" in done.stderr
    assert not out.exists() and not (tmp_path / "ck").exists()


def test_bad_sampler_option_exits_2(compile_cache: Path) -> None:
    done = run(["run", str(EXAMPLES / "eight_schools.yaml"), "--chains", "0"], compile_cache)
    assert done.returncode == 2 and "sampler.chains" in done.stderr
    done = run(["run", str(EXAMPLES / "eight_schools.yaml"), "--adaptation", "nutpie"], compile_cache)
    assert done.returncode == 2 and "sampler.adaptation" in done.stderr


def test_oversized_file_is_refused_before_reading(tmp_path: Path, compile_cache: Path) -> None:
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(65 * 1024 * 1024)  # sparse: costs no disk
    done = run(["run", str(big)], compile_cache)
    assert done.returncode == 2 and "the limit is" in done.stderr


def test_validate_prints_shapes_and_graph(compile_cache: Path) -> None:
    done = run(["validate", str(EXAMPLES / "hierarchical_logistic.yaml")], compile_cache)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    shapes = {v["name"]: v["shape"] for v in info["variables"]}
    assert shapes == {"mu_alpha": [], "sigma_alpha": [], "alpha": [50], "beta": [5]}
    assert info["graph"]["observe"]["y"] == "BernoulliLogits(logits=alpha[g] + (X @ beta))"


def test_run_checks_the_results_size_after_its_overrides(tmp_path: Path, compile_cache: Path) -> None:
    spec = tmp_path / "wide.yaml"
    spec.write_text('spec: 1\nparams:\n  x: {dist: "Normal(0, 1)", shape: [2000]}\n')  # 16 MB per chain: fine
    done = run(["run", str(spec), "--draws", "20000", "--quiet"], compile_cache)
    assert done.returncode == 2, done.stderr
    assert "sampler.draws: results of 321 MB per chain" in done.stderr and "limit 128 MB" in done.stderr


@pytest.mark.usefixtures("jax_ready")
def test_run_until_and_a_rerun_with_more_draws_continue_the_chains(tmp_path: Path, compile_cache: Path) -> None:
    """`--until` samples in rounds and says why it stopped; rerunning with a larger --draws and the same
    --checkpoint-dir continues the chains, equal to the longer run from the start."""
    from workers.engine import Engine

    spec = tmp_path / "normal.yaml"
    spec.write_text(json.dumps({"spec": 1, "data": {"y": [0.3, -1.2, 0.8]}, "params": {"mu": "Normal(0, 10)"},
                                "observe": {"y": "Normal(mu, 1)"}}))
    base = ["run", str(spec), "--seed", "6", "--chains", "2", "--warmup", "100"]
    done = run([*base, "--draws", "500", "--until", "--json", str(tmp_path / "u.json")], compile_cache)
    assert done.returncode == 0, done.stderr
    sampling = json.loads((tmp_path / "u.json").read_text())["sampling"]
    assert sampling["stopped"].startswith(("converged at", "max_draws reached")) and sampling["rounds"]
    assert f"until: {sampling['stopped']}" in " ".join(done.stdout.split())
    ckpt = tmp_path / "ckpt"
    for draws in ("150", "400"):
        done = run([*base, "--draws", draws, "--checkpoint-dir", str(ckpt), "--out", str(tmp_path / "c.nc")],
                   compile_cache)
        assert done.returncode == 0, done.stderr
    model, settings = parse_job(load_file(spec))
    fresh = Engine().run(model, settings.model_copy(update={"seed": 6, "chains": 2, "warmup": 100, "draws": 400}))
    assert np.array_equal(az.from_netcdf(str(tmp_path / "c.nc")).posterior["mu"].values, fresh.draws["mu"])
