"""service.client's notebook verbs (fit, JobHandle, DataFrames, errors) against a real stack."""

from __future__ import annotations

import copy
import functools
import io
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cli.stack import Stack
from service import client as client_module
from service.client import SUMMARY_COLUMNS, ApiError, Client, JobFailed, plain_data
from service.language.loader import load_file
from service.progress import NoBars, RichBars, TqdmBars, bars_for
from service.sampler import parse_job
from tests.conftest import EXAMPLES
from tests.service.conftest import TOKENS

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

pytestmark = pytest.mark.usefixtures("jax_ready")

SAMPLER = {"chains": 2, "warmup": 100, "draws": 100, "seed": 31}


def eight_schools() -> dict[str, Any]:
    return load_file(EXAMPLES / "eight_schools.yaml")


def posterior(idata: Any) -> dict[str, np.ndarray]:
    return {name: idata.posterior[name].values for name in idata.posterior.data_vars}


def test_fit_returns_the_netcdf_s_inference_data_and_a_local_run_s_draws(alice: Client) -> None:
    idata = alice.fit(eight_schools(), progress=False, **SAMPLER)
    job = alice.job(eight_schools(), **SAMPLER)  # seeded: the same job, content-addressed
    assert job.wait(progress=False)["state"] == "succeeded"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fit.nc"
        path.write_bytes(alice.netcdf(job.id))
        from_file = posterior(az.from_netcdf(path).load())
    from workers.engine import Engine

    model, settings = parse_job({"model": eight_schools(), "sampler": SAMPLER})
    local = Engine().run(model, settings).draws
    got = posterior(idata)
    assert set(got) == set(from_file) and idata.posterior["theta"].dims == ("chain", "draw", "school")
    for name in got:
        assert np.array_equal(got[name], from_file[name]), name
    for name in local:
        assert np.array_equal(got[name], local[name]), name
    assert np.array_equal(job.draws(["mu"])["mu"], local["mu"])


def test_module_fit_reads_url_and_token_from_the_environment(stack: Stack, alice: Client,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINYARD_URL", stack.url)
    monkeypatch.setenv("CHAINYARD_TOKEN", TOKENS["alice"])
    idata = client_module.fit(eight_schools(), **SAMPLER)  # progress=True: no terminal here, so no bars
    again = alice.fit(eight_schools(), progress=False, **SAMPLER)
    assert all(np.array_equal(a, b) for a, b in zip(posterior(idata).values(), posterior(again).values(),
                                                    strict=True))


def radon_frame(rows: int = 120) -> tuple[dict[str, Any], pd.DataFrame]:
    spec = load_file(EXAMPLES / "radon.yaml")
    data = spec.pop("data")
    frame = pd.DataFrame(data).iloc[:rows].reset_index(drop=True)
    frame["county"] = frame["county"].astype("category")
    return spec, frame


def test_a_data_frame_fits_a_formula_model_and_the_summary_is_arviz_s(alice: Client) -> None:
    spec, frame = radon_frame()
    assert isinstance(frame["county"].dtype, pd.CategoricalDtype) and pd.api.types.is_string_dtype(frame["floor"])
    job = alice.job(spec, data=frame, chains=2, warmup=150, draws=150, seed=5)
    job.wait(progress=False)
    summary = job.summary()
    assert tuple(summary.columns) == SUMMARY_COLUMNS == (
        "mean", "sd", "hdi_3%", "hdi_97%", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = az.summary(job.idata(), kind="all", hdi_prob=0.94, round_to="none")
    pd.testing.assert_frame_equal(summary, want, check_names=False)  # the service's rows are ArviZ's
    assert summary.index.is_unique and summary["r_hat"].notna().any()


def test_nan_in_a_data_frame_is_refused_before_sending(alice: Client) -> None:
    spec, frame = radon_frame(20)
    frame.loc[3, "log_radon"] = np.nan
    before = alice.list()["total"]
    with pytest.raises(ApiError) as info:
        alice.job(spec, data=frame, **SAMPLER)
    assert info.value.status == 422 and info.value.code == "invalid_spec"
    assert [d["path"] for d in info.value.details] == ["data.log_radon"]
    assert "missing" in info.value.details[0]["message"] and "3" in info.value.details[0]["message"]
    assert alice.list()["total"] == before


def test_errors_carry_status_code_message_and_paths(alice: Client) -> None:
    bad = copy.deepcopy(eight_schools())
    bad["params"]["mu"] = "Nope(0, 5)"
    with pytest.raises(ApiError) as info:
        alice.fit(bad, progress=False, **SAMPLER)
    assert info.value.status == 422 and info.value.code == "invalid_spec" and info.value.message
    assert info.value.details == [{"path": "model.params.mu", "message": "unknown distribution 'Nope'"}]
    with pytest.raises(ApiError) as missing:
        alice.handle("jnope").status()
    assert missing.value.status == 404 and missing.value.code == "not_found"


def test_a_failed_job_s_wait_raises_with_its_error(alice: Client) -> None:
    model = {"spec": 1, "data": {"y": [1.0, 2.0]}, "params": {"mu": "Normal(0, 1)"},
             "observe": {"y": "Normal(mu, exp(1000 + mu))"}}
    job = alice.job(model, chains=2, warmup=20, draws=20, seed=1)
    with pytest.raises(JobFailed) as info:
        job.wait(progress=False)
    exc = info.value
    assert isinstance(exc, ApiError) and exc.status == 409 and exc.code == "job_failed" and exc.state == "failed"
    assert "initialization failed: log density is -inf" in exc.message and exc.job_id == job.id
    with pytest.raises(ApiError):
        job.idata()


def test_timeout_cancel_and_delete_through_the_handle(alice: Client) -> None:
    job = alice.job(eight_schools(), chains=2, warmup=100, draws=200_000, seed=77)
    with pytest.raises(TimeoutError):
        job.wait(timeout=1.0, progress=False)
    assert job.cancel()["state"] in ("cancelled", "running")
    with pytest.raises(JobFailed) as info:
        job.wait(timeout=60, progress=False)
    assert info.value.code == "job_cancelled"
    job.delete()
    with pytest.raises(ApiError) as gone:
        job.status()
    assert gone.value.status == 404


def test_progress_bars_follow_the_job_document() -> None:
    from rich.console import Console

    assert isinstance(bars_for(False), NoBars)
    out = io.StringIO()
    bars = RichBars(Console(file=out, force_terminal=True, width=100))
    chains = [{"chain": i, "of": 200, "iteration": 50 * (i + 1), "phase": "warmup", "divergences": i}
              for i in range(2)]
    bars.update({"chains": chains})
    bars.close()
    assert "chain 0" in out.getvalue() and "100/200" in out.getvalue()
    from tqdm import tqdm

    text = io.StringIO()
    plain = TqdmBars(functools.partial(tqdm, file=text))
    plain.update({"chains": chains})
    plain.close()
    assert "chain 1" in text.getvalue() and "100/200" in text.getvalue() and "div=1" in text.getvalue()


def test_data_become_json_values() -> None:
    frame = pd.DataFrame({"g": pd.Categorical([1, 2]), "s": ["a", "b"], "n": [1, 2], "x": [0.5, 1.0]})
    assert plain_data(frame) == {"g": ["1", "2"], "s": ["a", "b"], "n": [1, 2], "x": [0.5, 1.0]}
    assert type(plain_data(frame)["n"][0]) is int
    assert plain_data({"y": np.arange(2), "m": np.eye(2), "k": np.int64(3)}) == {
        "y": [0, 1], "m": [[1.0, 0.0], [0.0, 1.0]], "k": 3}
    with pytest.raises(ApiError) as info:
        plain_data(pd.DataFrame({"o": pd.Series([1, "a"], dtype=object)}))
    assert info.value.details[0]["path"] == "data.o"
