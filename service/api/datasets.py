"""/v1/datasets: declare, append rows (JSON or CSV), read, versions, rows as of a version, delete."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from service.api.deps import Datasets, Tenant
from service.datasets import Dataset, DatasetStore, DatasetVersion
from service.datasets.content import to_csv
from service.exceptions import Problem, SpecError
from service.schemas import (
    DatasetCreate,
    DatasetList,
    DatasetPublic,
    DatasetRows,
    DatasetVersionList,
    DatasetVersionPublic,
    ErrorResponse,
)

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 404, 409, 413, 422)}
router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=ERRORS)

ROWS_BODY = {"required": True, "content": {"application/json": {"schema": DatasetRows.model_json_schema()},
                                           "text/csv": {"schema": {"type": "string"}}}}
"""The append's body in the OpenAPI: read by hand, since it may be CSV."""


def public(dataset: Dataset, versions: list[DatasetVersion]) -> DatasetPublic:
    """The Dataset resource, shaped from the typed head."""
    return DatasetPublic(name=dataset.name, columns=dataset.columns, description=dataset.description,
                         rows=dataset.version.rows, version=dataset.version.number, hash=dataset.version.hash,
                         created_at=dataset.created_at, updated_at=dataset.updated_at,
                         versions=[version_public(v) for v in versions])


def version_public(version: DatasetVersion) -> DatasetVersionPublic:
    return DatasetVersionPublic(**asdict(version))


def _read(store: DatasetStore, tenant: str, name: str) -> DatasetPublic:
    return public(*store.recent(tenant, name))


def rows_body(body: bytes, content_type: str | None) -> tuple[Any, str | None]:
    """(JSON body, None) or (None, CSV text) by Content-Type; no header means JSON."""
    media = (content_type or "application/json").split(";")[0].strip().lower()
    if media == "text/csv":
        try:
            return None, body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SpecError([Problem("body", f"CSV must be UTF-8 text (byte {exc.start} is not)")]) from None
    if media != "application/json" and not media.endswith("+json"):
        raise HTTPException(415, "send the rows as application/json or text/csv")
    try:
        return json.loads(body), None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting too deep
        raise SpecError([Problem("body", f"not valid JSON: {str(exc)[:200]}")]) from None


@router.get("", response_model=DatasetList)
def list_datasets(store: Datasets, tenant: Tenant) -> DatasetList:
    """The tenant's datasets, in name order."""
    return DatasetList(datasets=[public(d, [d.version]) for d in store.datasets(tenant)])


@router.put("/{name}", response_model=DatasetPublic, responses={201: {"model": DatasetPublic, "description":
                                                                      "Created"}})
def put(name: str, body: DatasetCreate, response: Response, store: Datasets, tenant: Tenant) -> DatasetPublic:
    """Declare a dataset (201, version 0). The same columns again: 200, nothing changes but a given description;
    other columns replace those of a dataset without rows, and are a 409 once it has rows."""
    _, created = store.put(tenant, name, columns=body.columns, description=body.description)
    response.status_code = 201 if created else 200
    return _read(store, tenant, name)


@router.get("/{name}", response_model=DatasetPublic)
def get_dataset(name: str, store: Datasets, tenant: Tenant) -> DatasetPublic:
    return _read(store, tenant, name)


@router.post("/{name}/rows", status_code=201, response_model=DatasetVersionPublic, openapi_extra={
    "requestBody": ROWS_BODY}, responses={415: {"model": ErrorResponse}})
async def append(name: str, request: Request, store: Datasets, tenant: Tenant) -> DatasetVersionPublic:
    """Append rows as one new version: JSON {columns} or {rows}, or CSV with a header line. All or nothing: a 422
    names every bad row and column (`rows[17].age: not a number`)."""
    body, csv_text = rows_body(await request.body(), request.headers.get("content-type"))
    version = await run_in_threadpool(store.append, tenant, name, body, csv_text=csv_text)
    return version_public(version)


@router.get("/{name}/rows", response_model=None, responses={200: {"content": {"text/csv": {}}}})
def read_rows(name: str, store: Datasets, tenant: Tenant,
              version: Annotated[int | None, Query(ge=0, description="Default: the latest.")] = None,
              format: Annotated[Literal["json", "csv"], Query()] = "json") -> Response | dict[str, Any]:
    """The rows as of a version: JSON {name, version, rows, hash, columns: {column: [values]}}, or CSV."""
    found, columns = store.columns(tenant, name, version)
    if format == "csv":
        return Response(to_csv(columns), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{name}-v{found.number}.csv"'})
    return {"name": name, "version": found.number, "rows": found.rows, "hash": found.hash, "columns": columns}


@router.get("/{name}/versions", response_model=DatasetVersionList)
def list_versions(name: str, store: Datasets, tenant: Tenant, offset: Annotated[int, Query(ge=0)] = 0,
                  limit: Annotated[int, Query(ge=1, le=500)] = 100) -> DatasetVersionList:
    """Every version in number order (0: the declared schema), a page at a time."""
    page, total = store.versions(tenant, name, offset=offset, limit=limit)
    return DatasetVersionList(versions=[version_public(v) for v in page], total=total, offset=offset, limit=limit)


@router.get("/{name}/versions/{number}", response_model=DatasetVersionPublic)
def get_version(name: str, number: int, store: Datasets, tenant: Tenant) -> DatasetVersionPublic:
    return version_public(store.version(tenant, name, number))


@router.delete("/{name}", status_code=204)
def delete(name: str, store: Datasets, tenant: Tenant) -> Response:
    """Remove the dataset, every version and its rows."""
    store.delete(tenant, name)
    return Response(status_code=204)
