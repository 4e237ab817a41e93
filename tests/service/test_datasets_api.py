"""/v1/datasets through the real API (uvicorn over a real Redis server; no workers: datasets need none) with the
Python client: status codes and paths of every bad input, all or nothing, JSON vs CSV vs records, concurrent
appends over HTTP, tenants, versions, rows as of a version, delete."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from cli.stack import Stack
from service.client import ApiError, Client
from tests.service.conftest import TOKENS, make_stack

SCHEMA = {"hospital": "string", "n": "int", "y": "float"}
BODY_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, compile_cache: Path) -> Iterator[Stack]:
    """Overrides the conftest's stack: the API and Redis only, with a small body limit."""
    s = make_stack(tmp_path_factory.mktemp("datasets"), compile_cache, workers=0, max_request_bytes=BODY_LIMIT)
    s.start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def no_datasets(alice: Client, bob: Client) -> None:
    for client in (alice, bob):
        for found in client.datasets():
            client.delete_dataset(found["name"])


def refused(call: Any, status: int = 422) -> dict[str, str]:
    """The paths and messages of the error `call` raises, after checking its status."""
    with pytest.raises(ApiError) as exc:
        call()
    assert exc.value.status == status, exc.value
    return {d["path"]: d["message"] for d in exc.value.details}


def rows_of(k: int, count: int) -> list[dict[str, Any]]:
    return [{"hospital": f"h{k}", "n": i, "y": k + i / 4} for i in range(count)]


def test_put_is_201_then_200_and_another_schema_is_409_once_there_are_rows(alice: Client) -> None:
    response = alice.http.put("/v1/datasets/hospitals", json={"columns": SCHEMA, "description": "cohorts"})
    assert response.status_code == 201
    created = response.json()
    assert created["version"] == 0 and created["rows"] == 0 and [v["number"] for v in created["versions"]] == [0]
    again = alice.http.put("/v1/datasets/hospitals", json={"columns": SCHEMA})
    assert again.status_code == 200 and again.json() == created
    assert alice.put_dataset("hospitals", {"y": "float"})["columns"] == {"y": "float"}  # no rows yet: replaced
    alice.append_rows("hospitals", rows=[{"y": 1.0}])
    with pytest.raises(ApiError) as exc:
        alice.put_dataset("hospitals", SCHEMA)
    assert exc.value.status == 409 and "1 rows" in exc.value.message


@pytest.mark.parametrize(("name", "columns", "path"), [
    ("9lives", SCHEMA, "name"),
    ("ok", {"age": "number"}, "columns.age"),
    ("ok", {"two words": "int"}, "columns.two words"),
    ("ok", {}, "columns"),
])
def test_bad_declarations_are_422_with_their_path(alice: Client, name: str, columns: dict[str, str],
                                                  path: str) -> None:
    assert path in refused(lambda: alice.put_dataset(name, columns))


def test_a_body_that_is_no_declaration_is_422(alice: Client) -> None:
    response = alice.http.put("/v1/datasets/ok", json={"columns": {"a": 1}, "extra": True})
    assert response.status_code == 422
    assert {d["path"] for d in response.json()["error"]["details"]} == {"columns.a", "extra"}


@pytest.mark.parametrize(("row", "path", "message"), [
    ({"hospital": "a", "n": 1}, "rows[17].y", "missing"),
    ({"hospital": "a", "n": 1, "y": 1.0, "age": 3}, "rows[17].age", "not a column"),
    ({"hospital": "a", "n": 1, "y": "abc"}, "rows[17].y", "not a number"),
    ({"hospital": "a", "n": 1.5, "y": 1.0}, "rows[17].n", "not an integer"),
    ({"hospital": "a", "n": True, "y": 1.0}, "rows[17].n", "not an integer (a boolean)"),
    ({"hospital": 7, "n": 1, "y": 1.0}, "rows[17].hospital", "not a string"),
    ({"hospital": "a" * 201, "n": 1, "y": 1.0}, "rows[17].hospital", "at most 200"),
    ({"hospital": "a", "n": 1, "y": float("nan")}, "rows[17].y", "not a finite number"),
    ({"hospital": "a", "n": 1, "y": float("-inf")}, "rows[17].y", "not a finite number"),
])
def test_a_bad_row_17_of_20_is_422_naming_it_and_appends_nothing(alice: Client, row: dict[str, Any], path: str,
                                                                 message: str) -> None:
    alice.put_dataset("hospitals", SCHEMA)
    alice.append_rows("hospitals", rows=rows_of(0, 2))
    rows = rows_of(1, 20)
    rows[17] = row
    found = refused(lambda: alice.append_rows("hospitals", rows=rows))
    assert list(found) == [path] and message in found[path]
    after = alice.dataset("hospitals")
    assert after["version"] == 1 and after["rows"] == 2


def test_bad_csv_and_bad_bodies(alice: Client) -> None:
    alice.put_dataset("hospitals", SCHEMA)
    assert "columns.y" in refused(lambda: alice.append_rows("hospitals", csv="hospital,n\na,1\n"))
    assert "columns.age" in refused(lambda: alice.append_rows("hospitals", csv="hospital,n,y,age\na,1,1,1\n"))
    assert "rows[1].y" in refused(lambda: alice.append_rows("hospitals", csv="hospital,n,y\na,1,1\nb,2,x\n"))
    uneven = {"hospital": ["a"], "n": [1, 2], "y": [1.0]}
    assert "columns.n" in refused(lambda: alice.append_rows("hospitals", columns=uneven))
    post = "/v1/datasets/hospitals/rows"
    for content, kind in [(b"\xff\xfe,n,y\n", "text/csv"), (b'{"rows": [', "application/json"),
                          (b'{"rows": [{"hospital": "a", "n": 1, "y": NaN}]}', "application/json"),
                          (b"[" * 50_000, "application/json")]:
        response = alice.http.post(post, content=content, headers={"Content-Type": kind})
        assert response.status_code == 422, (content[:20], response.text)
        assert response.json()["error"]["details"]
    assert alice.http.post(post, content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    big = "hospital,n,y\n" + "a,1,1.0\n" * (BODY_LIMIT // 8 + 1)
    assert refused(lambda: alice.append_rows("hospitals", csv=big), status=413) == {}
    assert alice.dataset("hospitals")["rows"] == 0


def test_json_columns_records_and_csv_give_the_same_hash(alice: Client) -> None:
    data = {"hospital": ["a", "b,c", "ü"], "n": [1, 2, 3], "y": [0.5, 2.0, -1e-9]}
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["n", "y", "hospital"])
    writer.writerows(zip(data["n"], data["y"], data["hospital"], strict=True))
    sent = {"columns": {"columns": data}, "rows": {"rows": [dict(zip(data, r, strict=True))
                                                            for r in zip(*data.values(), strict=True)]},
            "csv": {"csv": text.getvalue()}}
    hashes = set()
    for form, kwargs in sent.items():
        alice.put_dataset(f"by-{form}", SCHEMA)
        hashes.add(alice.append_rows(f"by-{form}", **kwargs)["hash"])
    assert len(hashes) == 1
    assert alice.dataset_rows("by-csv")["columns"] == data


def test_versions_and_rows_as_of_an_older_version(alice: Client) -> None:
    alice.put_dataset("hospitals", SCHEMA)
    made = [alice.append_rows("hospitals", rows=rows_of(k, k + 1)) for k in range(7)]
    assert [(v["number"], v["added"], v["rows"]) for v in made[:3]] == [(1, 1, 1), (2, 2, 3), (3, 3, 6)]
    shown = alice.dataset("hospitals")
    assert shown["version"] == 7 and shown["rows"] == 28 and shown["hash"] == made[-1]["hash"]
    assert [v["number"] for v in shown["versions"]] == [3, 4, 5, 6, 7]
    versions = alice.dataset_versions("hospitals")
    assert [v["number"] for v in versions] == list(range(8)) and versions[1:] == made
    page = alice.http.get("/v1/datasets/hospitals/versions", params={"offset": 2, "limit": 3}).json()
    assert page["total"] == 8 and [v["number"] for v in page["versions"]] == [2, 3, 4]
    assert alice.http.get("/v1/datasets/hospitals/versions/2").json() == made[1]
    older = alice.dataset_rows("hospitals", version=2)
    assert older["version"] == 2 and older["rows"] == 3 and older["hash"] == made[1]["hash"]
    assert older["columns"]["hospital"] == ["h0", "h1", "h1"] and older["columns"]["y"] == [0.0, 1.0, 1.25]
    as_csv = alice.http.get("/v1/datasets/hospitals/rows", params={"version": 2, "format": "csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.text == "hospital,n,y\nh0,0,0.0\nh1,0,1.0\nh1,1,1.25\n"
    assert refused(lambda: alice.dataset_rows("hospitals", version=8), status=404) == {}
    assert alice.http.get("/v1/datasets/hospitals/versions/99").status_code == 404


def test_concurrent_appends_over_http_lose_nothing(alice: Client, stack: Stack) -> None:
    alice.put_dataset("shared", SCHEMA)

    def appender(k: int) -> None:
        with Client(stack.url, TOKENS["alice"]) as client:
            for i in range(25):
                client.append_rows("shared", rows=[{"hospital": f"a{k}", "n": i, "y": float(k)}])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(appender, range(8)))
    shown = alice.dataset("shared")
    assert shown["version"] == 200 and shown["rows"] == 200
    data = alice.dataset_rows("shared")["columns"]
    assert sorted(zip(data["hospital"], data["n"], strict=True)) == sorted(
        (f"a{k}", i) for k in range(8) for i in range(25))


def test_another_tenants_dataset_is_404_for_every_route(alice: Client, bob: Client) -> None:
    alice.put_dataset("hospitals", SCHEMA)
    alice.append_rows("hospitals", rows=rows_of(0, 2))
    for call in (lambda: bob.dataset("hospitals"), lambda: bob.dataset_versions("hospitals"),
                 lambda: bob.dataset_rows("hospitals"), lambda: bob.append_rows("hospitals", rows=rows_of(1, 1)),
                 lambda: bob.delete_dataset("hospitals")):
        refused(call, status=404)
    assert bob.datasets() == [] and [d["name"] for d in alice.datasets()] == ["hospitals"]
    assert alice.dataset("hospitals")["rows"] == 2


def test_delete_is_204_and_then_404(alice: Client) -> None:
    alice.put_dataset("hospitals", SCHEMA)
    alice.append_rows("hospitals", columns={"hospital": ["a"], "n": [1], "y": [1.0]})
    assert alice.http.delete("/v1/datasets/hospitals").status_code == 204
    refused(lambda: alice.dataset("hospitals"), status=404)
    refused(lambda: alice.delete_dataset("hospitals"), status=404)
    assert alice.datasets() == []


def test_the_openapi_documents_the_dataset_routes(alice: Client) -> None:
    paths = alice.http.get("/openapi.json").json()["paths"]
    assert {"/v1/datasets", "/v1/datasets/{name}", "/v1/datasets/{name}/rows", "/v1/datasets/{name}/versions",
            "/v1/datasets/{name}/versions/{number}"} <= set(paths)
    assert set(paths["/v1/datasets/{name}/rows"]["post"]["requestBody"]["content"]) == {"application/json",
                                                                                        "text/csv"}
