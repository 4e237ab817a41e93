"""A small Python client for the REST API: `Client(url, token).submit(job)`."""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterator
from typing import Any

import httpx


class ApiError(Exception):
    """An error response, with the API's code, message and field details."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        err = body.get("error", {}) if isinstance(body, dict) else {}
        self.status = status
        self.code = err.get("code", "http_error")
        self.details = err.get("details", [])
        text = err.get("message", str(body))
        lines = [f"{d.get('path') or '(request)'}: {d.get('message')}" for d in self.details]
        super().__init__(f"{status} {self.code}: {text}" + "".join(f"\n  {line}" for line in lines))


class Client:
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
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"error": {"message": response.text}}
            raise ApiError(response.status_code, body)
        return response

    def submit(self, job: dict[str, Any]) -> dict[str, Any]:
        """`job` is {model, sampler?, name?, labels?}; a bare model spec is wrapped."""
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

    def events(self, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event, data) from the server-sent event stream until the job ends."""
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError(response.status_code, response.json())
            event = "message"
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    yield event, json.loads(line[5:])
