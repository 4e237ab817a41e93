"""The Python client for the REST API, for scripts and notebooks.

    from service.client import Client
    with Client("http://127.0.0.1:8000", token) as client:
        idata = client.fit("examples/eight_schools.yaml", chains=4, seed=1)   # arviz.InferenceData
        job = client.job(spec, data=frame, draws=500)                         # a JobHandle, submitted
        job.wait(); job.summary()                                             # pandas.DataFrame

Every error response raises `ApiError` (status, code, message, details); a job that ends failed,
cancelled or deleted raises `JobFailed`, an `ApiError` carrying the job's error. httpx is the only import
at module level: ArviZ, pandas, numpy and the progress bars are imported by the methods that need them.
"""

from __future__ import annotations

import builtins
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from arviz import InferenceData

DEFAULT_URL = "http://127.0.0.1:8000"
"""Where `fit` looks without a url argument or CHAINYARD_URL: `chainyard up`'s default port."""
SUMMARY_COLUMNS = ("mean", "sd", "hdi_3%", "hdi_97%", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat")
"""ArviZ's `az.summary(kind="all")` columns, in its order: what the service's summary rows hold."""
TERMINAL_STATES = ("succeeded", "failed", "cancelled")


class ApiError(Exception):
    """An error in the API's one shape: `status` (HTTP), `code`, `message`, `details` [{path, message}].

        try:
            client.submit(bad_spec)
        except ApiError as exc:
            print(exc.status, exc.code, [d["path"] for d in exc.details])
    """

    def __init__(self, status: int, body: Any) -> None:
        err = body.get("error", {}) if isinstance(body, dict) else {}
        self.status: int = status
        self.code: str = err.get("code", "http_error")
        self.message: str = err.get("message", str(body))
        self.details: list[dict[str, Any]] = list(err.get("details", []))
        lines = [f"{d.get('path') or '(request)'}: {d.get('message')}" for d in self.details]
        super().__init__(f"{status} {self.code}: {self.message}" + "".join(f"\n  {line}" for line in lines))


class JobFailed(ApiError):  # noqa: N818 - users' words: the job failed
    """A job that ended without results: code `job_failed`, `job_cancelled` or `job_deleted`, status 409
    (what the API answers when such a job's results are asked for); `job` is its last document, if any.

        try:
            job.wait()
        except JobFailed as exc:
            print(exc.job_id, exc.state, exc.message)   # message: the job's error
    """

    def __init__(self, job_id: str, state: str, job: dict[str, Any] | None = None) -> None:
        self.job_id = job_id
        self.state = state
        self.job = job
        reason = (job or {}).get("error") or {"deleted": "the job was deleted"}.get(state, f"the job {state}")
        super().__init__(409, {"error": {"code": f"job_{state}", "message": f"job {job_id} {state}: {reason}",
                                         "details": []}})


class Client:
    """A connection to one chainyard API as one tenant (its bearer token).

        with Client("http://127.0.0.1:8000", "tok") as client:
            print(client.get("j123")["state"])
    """

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        response = self.http.request(method, path, **kw)
        _raise_for(response)
        return response

    # -- notebook verbs: handles, InferenceData, DataFrames

    def fit(self, model: Any, data: Any = None, *, progress: bool = True, timeout: float | None = None,
            name: str | None = None, labels: Mapping[str, str] | None = None, **sampler: Any) -> InferenceData:
        """Submit, show progress, wait and return the job's `arviz.InferenceData` (in memory).

        `model` is a spec (mapping, or a YAML/JSON file path); see `job` for `data` and `sampler`.

            idata = client.fit("examples/eight_schools.yaml", chains=4, draws=1000, seed=1)
            az.plot_trace(idata, var_names=["mu", "tau"])
        """
        handle = self.job(model, data, name=name, labels=labels, **sampler)
        handle.wait(timeout=timeout, progress=progress)
        return handle.idata()

    def job(self, model: Any, data: Any = None, *, name: str | None = None,
            labels: Mapping[str, str] | None = None, **sampler: Any) -> JobHandle:
        """Submit a job; returns its handle at once.

        `data` (a pandas DataFrame for the formula front end, or a mapping of arrays and numbers) is merged
        into the model's `data`, overriding its keys; keyword arguments (chains, warmup, draws, seed,
        target_accept, ...) become the job's `sampler`. `model` may also be a whole job document
        {model, sampler, name, labels}, which the arguments update.

            job = client.job(spec, data=frame, chains=4, seed=7)
            job.wait()
        """
        doc = job_document(model, data, name=name, labels=labels, sampler=sampler)
        return JobHandle(id=self.submit(doc)["id"], client=self)

    def handle(self, job_id: str) -> JobHandle:
        """The handle of an existing job, e.g. one submitted from the command line.

            client.handle("j0123").summary()
        """
        return JobHandle(id=job_id, client=self)

    # -- one method per REST call, returning the API's JSON

    def submit(self, job: dict[str, Any]) -> dict[str, Any]:
        """`job` is {model, sampler?, name?, labels?}; a bare model spec is wrapped. Returns the Job document.

            client.submit({"model": spec, "sampler": {"chains": 2}})["id"]
        """
        if "model" not in job:
            job = {"model": job}
        result: dict[str, Any] = self._call("POST", "/v1/jobs", json=job).json()
        return result

    def get(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/v1/jobs/{job_id}").json()
        return result

    def list(self, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/v1/jobs", params={k: v for k, v in params.items() if v}).json()
        return result

    def cancel(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/v1/jobs/{job_id}/cancel").json()
        return result

    def delete(self, job_id: str) -> None:
        self._call("DELETE", f"/v1/jobs/{job_id}")

    def extend(self, job_id: str, draws: int) -> dict[str, Any]:
        """Continue a succeeded job's chains for `draws` more draws each (the Job, running again)."""
        result: dict[str, Any] = self._call("POST", f"/v1/jobs/{job_id}/extend", json={"draws": draws}).json()
        return result

    def summary(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/v1/jobs/{job_id}/summary").json()
        return result

    def netcdf(self, job_id: str) -> bytes:
        return self._call("GET", f"/v1/jobs/{job_id}/draws", params={"format": "netcdf"}).content

    def draws(self, job_id: str, variables: builtins.list[str] | None = None) -> dict[str, Any]:
        params = {"format": "json", **({"vars": ",".join(variables)} if variables else {})}
        result: dict[str, Any] = self._call("GET", f"/v1/jobs/{job_id}/draws", params=params).json()
        return result

    def validate(self, model: dict[str, Any], sampler: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/v1/models/validate",
                                            json={"model": model, "sampler": sampler}).json()
        return result

    # -- priors (design section 6)

    def put_prior(self, name: str, definition: dict[str, Any]) -> dict[str, Any]:
        """Create or replace a prior definition {model, data_from, sampler?, export, gate?}."""
        result: dict[str, Any] = self._call("PUT", f"/v1/priors/{name}", json=definition).json()
        return result

    def prior(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/v1/priors/{name}").json()
        return result

    def priors(self) -> builtins.list[dict[str, Any]]:
        result: builtins.list[dict[str, Any]] = self._call("GET", "/v1/priors").json()["priors"]
        return result

    def delete_prior(self, name: str) -> None:
        self._call("DELETE", f"/v1/priors/{name}")

    def refit(self, name: str) -> dict[str, Any]:
        """Submit a refit now; returns its Job (a new version is published when it ends and passes the gate)."""
        result: dict[str, Any] = self._call("POST", f"/v1/priors/{name}/refit").json()
        return result

    def prior_versions(self, name: str) -> builtins.list[dict[str, Any]]:
        result: builtins.list[dict[str, Any]] = self._call("GET", f"/v1/priors/{name}/versions").json()["versions"]
        return result

    def prior_version(self, name: str, version: int | None = None) -> dict[str, Any]:
        """Version `version` of a prior, or the latest."""
        if version is None:
            latest = self.prior(name)["latest"]
            if latest is None:
                raise ApiError(404, {"error": {"code": "not_found", "message": f"prior {name} has no version yet"}})
            version = int(latest)
        result: dict[str, Any] = self._call("GET", f"/v1/priors/{name}/versions/{version}").json()
        return result

    def prior_refits(self, name: str) -> builtins.list[dict[str, Any]]:
        result: builtins.list[dict[str, Any]] = self._call("GET", f"/v1/priors/{name}/refits").json()["refits"]
        return result

    def schedule_prior(self, name: str, cron: str, timezone: str = "UTC", suspend: bool = False) -> dict[str, Any]:
        """Refit a prior on a cron schedule (five fields or @daily, ...) in an IANA timezone; the schedule.

            client.schedule_prior("hospitals", "30 2 * * *", "Europe/Berlin")["next_run"]
        """
        result: dict[str, Any] = self._call("PUT", f"/v1/priors/{name}/schedule",
                                            json={"cron": cron, "timezone": timezone, "suspend": suspend}).json()
        return result

    def prior_schedule(self, name: str) -> dict[str, Any]:
        """A prior's schedule: cron, timezone, suspend, next_run, last_run, backend, in_sync (404 if none)."""
        result: dict[str, Any] = self._call("GET", f"/v1/priors/{name}/schedule").json()
        return result

    def unschedule_prior(self, name: str) -> None:
        """Stop refitting a prior on a schedule."""
        self._call("DELETE", f"/v1/priors/{name}/schedule")

    def save_elicited(self, name: str, params: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Publish expert judgements per variable ({var: {family, quantiles, intervals}}) as a version."""
        result: dict[str, Any] = self._call("POST", f"/v1/priors/{name}/versions",
                                            json={"source": "elicited", "params": params}).json()
        return result

    def events(self, job_id: str, *, read_timeout: float | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event, data) from the server-sent event stream until the job ends: `progress` with the Job
        document, then `end` with {state}. `read_timeout` bounds the wait for each line (httpx.ReadTimeout).

            for event, data in client.events(job_id):
                print(event, data.get("state"))
        """
        timeout = httpx.Timeout(self.http.timeout.connect, read=read_timeout)
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for(response)
            event = "message"
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    yield event, json.loads(line[5:])

    def elicit(self, family: str = "auto", quantiles: Mapping[float | str, float] | None = None,
               intervals: builtins.list[dict[str, float]] | None = None, df: float | None = None, *,
               lower: float | None = None, upper: float | None = None) -> dict[str, Any]:
        """Fit a distribution to expert judgements: {fits: [...], best: {family, params, error, spec, support}}.
        `df` fixes StudentT's; `lower`/`upper` are bounds the quantity cannot cross (0 and 1: a proportion).

            client.elicit(quantiles={0.5: 0.7}, intervals=[{"low": 0.5, "high": 0.85, "mass": 0.9}])["best"]
        """
        body: dict[str, Any] = {"family": family, "intervals": intervals, "df": df, "lower": lower, "upper": upper}
        if quantiles is not None:
            body["quantiles"] = {str(p): v for p, v in quantiles.items()}
        body = {k: v for k, v in body.items() if v is not None}
        result: dict[str, Any] = self._call("POST", "/v1/priors/elicit", json=body).json()
        return result

    # -- datasets (design section 6)

    def put_dataset(self, name: str, columns: Mapping[str, str], description: str | None = None) -> dict[str, Any]:
        """Declare a dataset's columns (float, int, string or category, in order); the Dataset document.

            client.put_dataset("hospitals", {"hospital": "string", "n": "int", "y": "float"})
        """
        body: dict[str, Any] = {"columns": dict(columns)}
        if description is not None:
            body["description"] = description
        result: dict[str, Any] = self._call("PUT", f"/v1/datasets/{name}", json=body).json()
        return result

    def append_rows(self, name: str, rows: builtins.list[Mapping[str, Any]] | None = None,
                    columns: Any = None, csv: str | bytes | None = None) -> dict[str, Any]:
        """Append rows as one new version: `rows` (one mapping per row), `columns` (column -> values, or a
        pandas DataFrame) or `csv` (text with a header line); exactly one of them. The new version's document.

            client.append_rows("hospitals", columns=frame)["number"]
        """
        given = [arg for arg in (rows, columns, csv) if arg is not None]
        if len(given) != 1:
            raise TypeError("append_rows takes exactly one of rows, columns or csv")
        if csv is not None:
            content = csv.encode() if isinstance(csv, str) else csv
            response = self._call("POST", f"/v1/datasets/{name}/rows", content=content,
                                  headers={"Content-Type": "text/csv; charset=utf-8"})
        else:
            body = {"rows": [dict(r) for r in rows]} if rows is not None else {"columns": plain_data(columns)}
            # NaN written as such (httpx refuses it), so that the service names its row and column
            response = self._call("POST", f"/v1/datasets/{name}/rows", content=json.dumps(body).encode(),
                                  headers={"Content-Type": "application/json"})
        result: dict[str, Any] = response.json()
        return result

    def dataset(self, name: str) -> dict[str, Any]:
        """The Dataset document: columns, rows, version, hash, times and the last few versions."""
        result: dict[str, Any] = self._call("GET", f"/v1/datasets/{name}").json()
        return result

    def datasets(self) -> builtins.list[dict[str, Any]]:
        result: builtins.list[dict[str, Any]] = self._call("GET", "/v1/datasets").json()["datasets"]
        return result

    def dataset_versions(self, name: str) -> builtins.list[dict[str, Any]]:
        """Every version of a dataset, in number order (0: the declared schema)."""
        versions: builtins.list[dict[str, Any]] = []
        while True:
            page = self._call("GET", f"/v1/datasets/{name}/versions",
                              params={"offset": len(versions), "limit": 500}).json()
            versions += page["versions"]
            if not page["versions"] or len(versions) >= page["total"]:
                return versions

    def dataset_rows(self, name: str, version: int | None = None) -> dict[str, Any]:
        """The rows as of a version (default: the latest): {name, version, rows, hash, columns: {column: values}}."""
        params = {"format": "json", **({"version": version} if version is not None else {})}
        result: dict[str, Any] = self._call("GET", f"/v1/datasets/{name}/rows", params=params).json()
        return result

    def delete_dataset(self, name: str) -> None:
        self._call("DELETE", f"/v1/datasets/{name}")


@dataclass(frozen=True)
class JobHandle:
    """A submitted job: its id and the client that reaches it (arq's Job). Results are fetched per call.

        job = client.job(spec, chains=4)
        job.wait()                      # progress bars; raises JobFailed unless it succeeded
        frame = job.summary()           # one row per variable (and element)
    """

    id: str
    """The job's id, as `chainyard status <id>` takes it."""
    client: Client
    """The connection (and tenant) the job belongs to."""

    def status(self) -> dict[str, Any]:
        """The Job document: state, per-chain progress, live diagnostics.

            job.status()["state"]   # "queued", "running", "succeeded", "failed" or "cancelled"
        """
        return self.client.get(self.id)

    def wait(self, timeout: float | None = None, progress: bool = True) -> dict[str, Any]:
        """Follow the event stream (with progress bars) until the job ends; the final Job document.

        Raises `JobFailed` (with the job's error) unless it succeeded, `TimeoutError` after `timeout` s.

            job.wait(timeout=600)["diagnostics"]["max_rhat"]
        """
        from service.progress import bars_for

        deadline = None if timeout is None else time.monotonic() + timeout
        bars = bars_for(progress)
        try:
            state = self._follow(bars, deadline)
        finally:
            bars.close()
        if state == "deleted":
            raise JobFailed(self.id, state)
        job = self.status()
        if job["state"] != "succeeded":
            raise JobFailed(self.id, job["state"], job)
        return job

    def _follow(self, bars: Any, deadline: float | None) -> str:
        """The final state from `end`; reconnects after a read timeout until the deadline."""
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"job {self.id} had not ended when the wait timed out")
            try:
                for event, data in self.client.events(self.id, read_timeout=remaining):
                    if event == "progress":
                        bars.update(data)
                    elif event == "end":
                        return str(data["state"])
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(f"job {self.id} had not ended when the wait timed out")
            except httpx.ReadTimeout:
                continue
            state = self.status()["state"]  # the stream closed without `end` (the API restarted)
            if state in TERMINAL_STATES:
                return str(state)
            time.sleep(0.5)

    def idata(self) -> InferenceData:
        """The finished job's `arviz.InferenceData`, read from its netCDF into memory.

            az.summary(job.idata(), var_names=["mu"])
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import arviz as az

        blob = self.client.netcdf(self.id)
        with tempfile.TemporaryDirectory(prefix="chainyard-") as tmp:
            path = Path(tmp) / f"{self.id}.nc"
            path.write_bytes(blob)
            idata: InferenceData = az.from_netcdf(path).load()  # type: ignore[no-untyped-call]
            for group in idata.groups():
                getattr(idata, group).close()  # loaded: the file can go
        return idata

    def summary(self) -> pd.DataFrame:
        """The service's summary as a DataFrame: index the variable (`theta[Choate]`), ArviZ's columns
        (mean, sd, hdi_3%, hdi_97%, mcse_mean, mcse_sd, ess_bulk, ess_tail, r_hat); NaN where ArviZ has none.

            job.summary().loc["mu", ["mean", "r_hat"]]
        """
        import pandas as pd

        rows = self.client.summary(self.id)["variables"]
        frame = pd.DataFrame([[r.get(c) for c in SUMMARY_COLUMNS] for r in rows],
                             index=[r["variable"] for r in rows], columns=list(SUMMARY_COLUMNS), dtype=float)
        return frame

    def draws(self, vars: builtins.list[str] | None = None) -> dict[str, np.ndarray]:
        """The posterior draws by variable, each an array (chain, draw, *shape); all variables by default.

            job.draws(["mu"])["mu"].mean()
        """
        import numpy as np

        result = self.client.draws(self.id, vars)
        return {name: np.asarray(values) for name, values in result["draws"].items()}

    def cancel(self) -> dict[str, Any]:
        """Cancel the job; its chains stop at their next block. The Job document.

            job.cancel()["state"]   # "cancelled"
        """
        return self.client.cancel(self.id)

    def extend(self, draws: int) -> dict[str, Any]:
        """Continue the chains for `draws` more draws each; `wait()` again for the longer result, which equals a
        job that asked for the draws from the start, bit for bit.

            job.extend(1000); job.wait()
        """
        return self.client.extend(self.id, draws)

    def delete(self) -> None:
        """Delete the job and everything stored for it.

            job.delete()
        """
        self.client.delete(self.id)


def fit(model: Any, data: Any = None, *, url: str | None = None, token: str | None = None, progress: bool = True,
        timeout: float | None = None, **sampler: Any) -> InferenceData:
    """`Client(url, token).fit(...)` for one fit: url and token default to CHAINYARD_URL and CHAINYARD_TOKEN.

        from service.client import fit
        idata = fit("examples/radon.yaml", data=frame, chains=4, seed=1)
    """
    with Client(url or os.environ.get("CHAINYARD_URL") or DEFAULT_URL,
                token if token is not None else os.environ.get("CHAINYARD_TOKEN")) as client:
        return client.fit(model, data, progress=progress, timeout=timeout, **sampler)


def job_document(model: Any, data: Any = None, *, name: str | None = None, labels: Mapping[str, str] | None = None,
                 sampler: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The job document `Client.job` submits: the model (a file read with the service's loader), `data`
    converted and merged into the model's data, `sampler`, `name` and `labels` merged into the job's.

        job_document({"spec": 1, ...}, {"y": np.zeros(3)}, sampler={"chains": 2})
    """
    if isinstance(model, str | os.PathLike):
        from service.language.loader import load_file

        model = load_file(Path(model))
    if not isinstance(model, Mapping):
        raise TypeError(f"model must be a spec (mapping) or a file path, not {type(model).__name__}")
    doc: dict[str, Any] = dict(model) if "model" in model else {"model": model}
    spec = dict(doc["model"])
    if data is not None:
        existing = spec.get("data")
        spec["data"] = {**(existing if isinstance(existing, Mapping) else {}), **plain_data(data)}
    doc["model"] = spec
    if sampler:
        doc["sampler"] = {**(doc.get("sampler") or {}), **sampler}
    if name is not None:
        doc["name"] = name
    if labels is not None:
        doc["labels"] = dict(labels)
    return doc


def plain_data(data: Any) -> dict[str, Any]:
    """`data` as JSON values: a DataFrame's columns (categories and strings as lists of strings, ints as
    ints; NaN refused here, as a 422 `ApiError` naming the column), or a mapping's arrays via `.tolist()`.

        plain_data(pd.DataFrame({"g": ["a", "b"], "y": [1, 2]}))   # {"g": ["a", "b"], "y": [1, 2]}
    """
    if _is_frame(data):
        return _columns(data)
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a pandas DataFrame or a mapping, not {type(data).__name__}")
    return {str(k): _plain(v) for k, v in data.items()}


def _is_frame(data: Any) -> bool:
    module = type(data).__module__
    if not module.startswith("pandas"):
        return False
    import pandas as pd

    return isinstance(data, pd.DataFrame)


def _columns(frame: pd.DataFrame) -> dict[str, Any]:
    from pandas.api import types

    out: dict[str, Any] = {}
    problems: builtins.list[dict[str, str]] = []
    for name in frame.columns:
        col = frame[name]
        path = f"data.{name}"
        missing = int(col.isna().sum())
        if missing:
            rows = ", ".join(str(i) for i in col.index[col.isna()][:5])
            problems.append({"path": path, "message": f"{missing} missing value(s) (NaN/None), at rows {rows}"
                                                      f"{'...' if missing > 5 else ''}; drop or fill them first"})
        elif isinstance(col.dtype, types.CategoricalDtype) or types.is_string_dtype(col):
            out[str(name)] = [str(v) for v in col.tolist()]
        elif types.is_bool_dtype(col.dtype):
            out[str(name)] = [bool(v) for v in col.tolist()]
        elif types.is_integer_dtype(col.dtype):
            out[str(name)] = col.astype("int64").to_numpy().tolist()
        elif types.is_float_dtype(col.dtype):
            values = col.astype("float64").to_numpy().tolist()
            if not all(math.isfinite(v) for v in values):
                problems.append({"path": path, "message": "infinite value(s); data must be finite numbers"})
            out[str(name)] = values
        else:
            problems.append({"path": path, "message": f"column of dtype {col.dtype} is neither numbers nor "
                                                      "strings/categories"})
    if problems:
        raise ApiError(422, {"error": {"code": "invalid_spec", "details": problems, "message":
                                       f"{len(problems)} problem(s) in the data (found before sending)"}})
    return out


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars, pandas Series: ints stay ints
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {"error": {"message": response.text}}
    raise ApiError(response.status_code, body)
