"""DatasetStore against a real Redis server: declaring, appending (every bad input, all or nothing, limits, chunks),
versions and their hash chain, reading as of a version, concurrent appenders in separate processes, tenants,
delete."""

from __future__ import annotations

import math
import time
from concurrent.futures import ProcessPoolExecutor
from itertools import pairwise
from multiprocessing import get_context
from typing import Any

import pytest
from redis import Redis

from service import keys
from service.config import Settings
from service.datasets import Dataset, DatasetStore, DatasetVersion
from service.datasets.content import canonical
from service.datasets.schema import MAX_PROBLEMS, chain_hash, schema_hash
from service.exceptions import ConflictError, NotFoundError, SpecError

SCHEMA = {"hospital": "string", "n": "int", "y": "float"}
APPENDERS = 8
APPENDS = 50


@pytest.fixture
def redis(empty_redis: Redis) -> Redis:
    return empty_redis


@pytest.fixture
def store(redis: Redis, redis_server: str) -> DatasetStore:
    return DatasetStore(redis, Settings(redis_url=redis_server))


@pytest.fixture
def hospitals(store: DatasetStore) -> Dataset:
    dataset, created = store.put("alice", "hospitals", columns=SCHEMA, description="cohorts")
    assert created
    return dataset


def problems(exc: pytest.ExceptionInfo[SpecError]) -> dict[str, str]:
    return {p.path: p.message for p in exc.value.problems}


def cohort(k: int, rows: int = 3) -> dict[str, list[Any]]:
    return {"hospital": [f"h{k}-{i}" for i in range(rows)], "n": [10 * k + i for i in range(rows)],
            "y": [k + i / 8 for i in range(rows)]}


def records(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def recomputed_hash(store: DatasetStore, tenant: str, name: str) -> str:
    """The head's hash recomputed from what is stored: the schema, then each version's rows in number order."""
    dataset = store.get(tenant, name)
    versions, total = store.versions(tenant, name, limit=10_000)
    assert total == len(versions) == dataset.version.number + 1
    _, data = store.columns(tenant, name)
    digest = schema_hash(dataset.columns)
    assert versions[0].hash == digest
    for previous, version in pairwise(versions):
        appended = {col: values[previous.rows:version.rows] for col, values in data.items()}
        digest = chain_hash(digest, canonical(dataset.columns, appended))
        assert version.hash == digest, version.number
    return digest


# -- declaring


def test_put_creates_version_zero_and_the_same_schema_again_changes_nothing(store: DatasetStore,
                                                                          hospitals: Dataset) -> None:
    assert hospitals.version == DatasetVersion(number=0, rows=0, added=0, hash=schema_hash(SCHEMA),
                                               created_at=hospitals.created_at)
    again, created = store.put("alice", "hospitals", columns={"hospital": "category", "n": "int", "y": "float"})
    assert not created and again == hospitals  # `category` is a string column
    assert store.names("alice") == ["hospitals"] and store.get("alice", "hospitals") == hospitals


def test_a_new_schema_replaces_an_empty_one_and_conflicts_once_there_are_rows(store: DatasetStore,
                                                                            hospitals: Dataset) -> None:
    replaced, created = store.put("alice", "hospitals", columns={"y": "float", "n": "int"})
    assert not created and replaced.columns == {"y": "float", "n": "int"}
    assert replaced.version.hash == schema_hash({"y": "float", "n": "int"}) != hospitals.version.hash
    assert replaced.description == "cohorts" and replaced.created_at == hospitals.created_at
    assert store.versions("alice", "hospitals")[1] == 1
    store.append("alice", "hospitals", {"columns": {"y": [1.5], "n": [2]}})
    with pytest.raises(ConflictError, match="1 rows"):
        store.put("alice", "hospitals", columns=SCHEMA)
    with pytest.raises(ConflictError):  # the order of the columns is part of the schema
        store.put("alice", "hospitals", columns={"n": "int", "y": "float"})


def test_the_same_schema_with_a_new_description_changes_only_the_description(store: DatasetStore,
                                                                             hospitals: Dataset) -> None:
    updated, created = store.put("alice", "hospitals", columns=SCHEMA, description="three cohorts")
    assert not created and updated.description == "three cohorts" and updated.version == hospitals.version
    assert store.get("alice", "hospitals") == updated
    for bad in ("x" * 2001, "a\ud800"):
        with pytest.raises(SpecError) as exc:
            store.put("alice", "hospitals", columns=SCHEMA, description=bad)
        assert "description" in problems(exc)


@pytest.mark.parametrize(("name", "columns", "path", "message"), [
    ("1st", SCHEMA, "name", "start with a letter"),
    ("a:b", SCHEMA, "name", "letters"),
    ("x" * 65, SCHEMA, "name", "at most 64"),
    ("ok", {}, "columns", "must map"),
    ("ok", {"age": "number"}, "columns.age", "unknown type 'number'"),
    ("ok", {"2age": "int"}, "columns.2age", "column names"),
    ("ok", {"a-b": "int"}, "columns.a-b", "column names"),
    ("ok", {f"c{i}": "float" for i in range(201)}, "columns", "at most 200"),
])
def test_bad_names_and_columns_are_refused_with_their_path(store: DatasetStore, name: str, columns: dict[str, Any],
                                                           path: str, message: str) -> None:
    with pytest.raises(SpecError) as exc:
        store.put("alice", name, columns=columns)
    assert message in problems(exc)[path]
    assert store.names("alice") == []


# -- appending


def test_columns_records_and_csv_of_the_same_values_give_the_same_hash(store: DatasetStore) -> None:
    data = {"hospital": ["Zürich", "東京", ""], "n": [1, 2, -3], "y": [0.1, -0.0, 1e-300]}
    csv = "y,n,hospital\n0.1,1,Zürich\n-0.0,2.0,東京\n1e-300,-3,\n"  # columns in another order, 2.0 an int
    for name in ("by-columns", "by-rows", "by-csv"):
        store.put("alice", name, columns=SCHEMA)
    hashes = {store.append("alice", "by-columns", {"columns": data}).hash,
              store.append("alice", "by-rows", {"rows": records(data)}).hash,
              store.append("alice", "by-csv", None, csv_text=csv).hash}
    assert len(hashes) == 1
    assert store.columns("alice", "by-csv")[1] == data
    assert math.copysign(1, store.columns("alice", "by-rows")[1]["y"][1]) == -1


def test_appends_make_versions_whose_hashes_chain(store: DatasetStore, hospitals: Dataset) -> None:
    made = [store.append("alice", "hospitals", {"columns": cohort(k, rows=k + 1)}) for k in range(3)]
    assert [(v.number, v.added, v.rows) for v in made] == [(1, 1, 1), (2, 2, 3), (3, 3, 6)]
    assert made[0].hash == chain_hash(hospitals.version.hash, canonical(SCHEMA, cohort(0, rows=1)))
    assert recomputed_hash(store, "alice", "hospitals") == made[-1].hash == store.get("alice", "hospitals").version.hash
    versions, total = store.versions("alice", "hospitals", offset=1, limit=2)
    assert total == 4 and versions == made[:2]
    assert store.versions("alice", "hospitals", offset=9) == ([], 4)
    assert store.version("alice", "hospitals", 2) == made[1] and store.version("alice", "hospitals") == made[2]
    for number in (4, -1):
        with pytest.raises(NotFoundError, match="no version"):
            store.version("alice", "hospitals", number)
    version, data = store.columns("alice", "hospitals", 2)
    assert version == made[1] and data == {col: cohort(0, 1)[col] + cohort(1, 2)[col] for col in SCHEMA}
    assert store.columns("alice", "hospitals", 0)[1] == {col: [] for col in SCHEMA}
    dataset = store.get("alice", "hospitals")
    assert dataset.version == made[2] and dataset.updated_at == made[2].created_at


BAD_VALUES = [
    ("y", "abc", "not a number"),
    ("y", None, "missing value"),
    ("y", float("nan"), "not a finite number"),
    ("y", float("inf"), "not a finite number"),
    ("y", True, "not a number"),
    ("y", [1.0], "not a number"),
    ("n", 2.5, "not an integer"),
    ("n", True, "not an integer (a boolean)"),
    ("n", "3", "not an integer"),
    ("n", 2**70, "out of range"),
    ("hospital", 5, "not a string"),
    ("hospital", "x" * 201, "at most 200"),
    ("hospital", "a\ud800", "lone surrogate"),
    ("hospital", "a\tb", "control character"),
]


@pytest.mark.parametrize(("column", "value", "message"), BAD_VALUES)
def test_a_bad_value_names_its_row_and_column_and_nothing_is_appended(store: DatasetStore, hospitals: Dataset,
                                                                      redis: Redis, column: str, value: Any,
                                                                      message: str) -> None:
    rows = records(cohort(1, rows=20))
    rows[17][column] = value
    with pytest.raises(SpecError) as exc:
        store.append("alice", "hospitals", {"rows": rows})
    assert list(problems(exc)) == [f"rows[17].{column}"] and message in problems(exc)[f"rows[17].{column}"]
    assert store.get("alice", "hospitals") == hospitals
    assert list(redis.scan_iter(match="cy:dataset-append:*")) == []  # nothing staged is left behind


@pytest.mark.parametrize(("csv", "path", "message"), [
    ("hospital,n\na,1\n", "columns.y", "missing"),
    ("hospital,n,y,age\na,1,2,3\n", "columns.age", "not a column"),
    ("hospital,n,n,y\na,1,1,2\n", "columns.n", "given twice"),
    ("", "header", "no header line"),
    ("hospital,n,y\na,1\n", "rows[0]", "2 fields; the header has 3"),
    ("hospital,n,y\na,1,x\n", "rows[0].y", "not a number"),
    ("hospital,n,y\na,,1\n", "rows[0].n", "missing value"),
    ("hospital,n,y\na,1_0,1\n", "rows[0].n", "not an integer"),
    ("hospital,n,y\na,1,NaN\n", "rows[0].y", "not a finite number"),
    ('hospital,n,y\n"a,1,1\n', "body", "not CSV"),
])
def test_bad_csv_is_refused_with_its_path(store: DatasetStore, hospitals: Dataset, csv: str, path: str,
                                          message: str) -> None:
    with pytest.raises(SpecError) as exc:
        store.append("alice", "hospitals", None, csv_text=csv)
    assert message in problems(exc)[path], problems(exc)
    assert store.get("alice", "hospitals").version.rows == 0


@pytest.mark.parametrize(("body", "path", "message"), [
    ({"columns": {"hospital": ["a"], "n": [1]}}, "columns.y", "missing"),
    ({"columns": {**cohort(1, 1), "age": [3]}}, "columns.age", "not a column"),
    ({"columns": {**cohort(1, 1), "n": [1, 2]}}, "columns.n", "has 2 values; columns.hospital has 1"),
    ({"columns": {**cohort(1, 1), "n": 1}}, "columns.n", "must be a list"),
    ({"rows": [{"hospital": "a", "n": 1}]}, "rows[0].y", "missing"),
    ({"rows": [{"hospital": "a", "n": 1, "y": 2, "age": 3}]}, "rows[0].age", "not a column"),
    ({"rows": [[1, 2, 3]]}, "rows[0]", "must be an object"),
    ({"rows": {"a": 1}}, "rows", "must be a list"),
    ({"rows": []}, "rows", "no rows"),
    ({"columns": cohort(1, 1), "rows": []}, "", "the body is"),
    ([1, 2], "", "the body is"),
])
def test_bad_json_shapes_are_refused_with_their_path(store: DatasetStore, hospitals: Dataset, body: Any,
                                                     path: str, message: str) -> None:
    with pytest.raises(SpecError) as exc:
        store.append("alice", "hospitals", body)
    assert message in problems(exc)[path], problems(exc)


def test_every_problem_is_collected_up_to_a_cap(store: DatasetStore, hospitals: Dataset) -> None:
    rows = [{"hospital": "a", "n": 0.5, "y": "?"} for _ in range(100)]
    with pytest.raises(SpecError) as exc:
        store.append("alice", "hospitals", {"rows": rows})
    found = exc.value.problems
    assert len(found) == MAX_PROBLEMS + 1 and str(found[-1]) == f"… and {200 - MAX_PROBLEMS} more"
    assert [p.path for p in found[:4]] == ["rows[0].n", "rows[0].y", "rows[1].n", "rows[1].y"]


def test_limits_on_rows_per_append_rows_and_cells_per_dataset(redis: Redis, redis_server: str) -> None:
    store = DatasetStore(redis, Settings(redis_url=redis_server, max_append_rows=5, max_dataset_rows=8,
                                         max_dataset_cells=21))
    store.put("alice", "small", columns=SCHEMA)
    for body, csv in [({"columns": cohort(1, 6)}, None), ({"rows": records(cohort(1, 6))}, None),
                      (None, "hospital,n,y\n" + "a,1,1\n" * 6)]:
        with pytest.raises(SpecError, match="at most 5 \\(max_append_rows\\)"):
            store.append("alice", "small", body, csv_text=csv)
    store.append("alice", "small", {"columns": cohort(1, 5)})
    with pytest.raises(SpecError, match="would hold 9 rows; this server keeps at most 8"):
        store.append("alice", "small", {"columns": cohort(2, 4)})
    with pytest.raises(SpecError, match="would hold 24 values"):
        store.append("alice", "small", {"columns": cohort(2, 3)})
    store.append("alice", "small", {"columns": cohort(2, 2)})
    assert store.get("alice", "small").version.rows == 7


def test_an_append_is_stored_in_chunks_of_at_most_chunk_bytes(redis: Redis, redis_server: str) -> None:
    store = DatasetStore(redis, Settings(redis_url=redis_server, chunk_bytes=1024))
    store.put("alice", "big", columns=SCHEMA)
    data = cohort(3, rows=2000)
    store.append("alice", "big", {"columns": data})
    chunks = redis.lrange(keys.dataset_rows("alice", "big", 1), 0, -1)
    assert len(chunks) > 10 and max(len(c) for c in chunks) <= 1024
    assert redis.ttl(keys.dataset_rows("alice", "big", 1)) == -1
    assert store.columns("alice", "big")[1] == data


# -- concurrency: appenders in separate processes


def append_many(url: str, appender: int, start_at: float) -> list[str]:
    """One appender process: APPENDS appends of two rows that name it and the append."""
    store = DatasetStore(Redis.from_url(url), Settings(redis_url=url))
    time.sleep(max(0.0, start_at - time.time()))  # all processes start appending together
    hashes = []
    for i in range(APPENDS):
        version = store.append("alice", "shared", {"rows": [
            {"hospital": f"a{appender}", "n": i, "y": appender + i / 100},
            {"hospital": f"a{appender}", "n": -i, "y": -appender - i / 100}]})
        hashes.append(version.hash)
    return hashes


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_concurrent_appenders_lose_nothing_and_the_hash_is_that_of_the_stored_order(
        store: DatasetStore, redis_server: str) -> None:
    store.put("alice", "shared", columns=SCHEMA)
    start_at = time.time() + 3.0  # time for the processes to import
    with ProcessPoolExecutor(APPENDERS, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(append_many, redis_server, a, start_at) for a in range(APPENDERS)]
        returned = [h for f in futures for h in f.result(timeout=240)]
    head = store.get("alice", "shared").version
    assert head.number == APPENDERS * APPENDS and head.rows == 2 * APPENDERS * APPENDS
    versions, _ = store.versions("alice", "shared", limit=1000)
    assert [v.number for v in versions] == list(range(APPENDERS * APPENDS + 1))
    assert all(v.added == 2 and v.rows == 2 * v.number for v in versions[1:])
    assert sorted(returned) == sorted(v.hash for v in versions[1:])  # each append got its own version
    _, data = store.columns("alice", "shared")
    appended = sorted(zip(data["hospital"], data["n"], strict=True))
    assert appended == sorted((f"a{a}", s * i) for a in range(APPENDERS) for i in range(APPENDS) for s in (1, -1))
    for a in range(APPENDERS):  # each appender's appends are stored in the order it made them
        firsts = zip(data["hospital"][::2], data["n"][::2], strict=True)  # each append's first row: n = i
        assert [n for h, n in firsts if h == f"a{a}"] == list(range(APPENDS))
    assert recomputed_hash(store, "alice", "shared") == head.hash
    store.put("alice", "replay", columns=SCHEMA)  # the same appends in the same order: the same hash
    for previous, version in pairwise(versions):
        store.append("alice", "replay", {"columns": {c: v[previous.rows:version.rows] for c, v in data.items()}})
    assert store.get("alice", "replay").version.hash == head.hash


# -- tenants and delete


def test_another_tenants_dataset_is_not_found(store: DatasetStore, hospitals: Dataset) -> None:
    store.append("alice", "hospitals", {"columns": cohort(1)})
    for call in (lambda: store.get("bob", "hospitals"), lambda: store.versions("bob", "hospitals"),
                 lambda: store.version("bob", "hospitals", 0), lambda: store.columns("bob", "hospitals"),
                 lambda: store.append("bob", "hospitals", {"columns": cohort(1)}),
                 lambda: store.delete("bob", "hospitals")):
        with pytest.raises(NotFoundError):
            call()
    assert store.names("bob") == [] and store.datasets("bob") == []
    bobs, created = store.put("bob", "hospitals", columns={"y": "float"})  # bob's own, of the same name
    assert created and store.get("alice", "hospitals").version.rows == 3 and bobs.columns == {"y": "float"}
    assert [d.name for d in store.datasets("alice")] == ["hospitals"]


def test_names_with_a_colon_cannot_reach_another_tenants_keys(store: DatasetStore) -> None:
    store.put("a:b", "data", columns=SCHEMA)
    with pytest.raises(NotFoundError):
        store.get("a", "b:data")
    with pytest.raises(NotFoundError):
        store.get("a", "data:b")


def test_delete_removes_every_key_and_the_name_can_be_declared_again(store: DatasetStore, hospitals: Dataset,
                                                                    redis: Redis) -> None:
    for k in range(3):
        store.append("alice", "hospitals", {"columns": cohort(k)})
    store.put("alice", "other", columns=SCHEMA)
    store.delete("alice", "hospitals")
    assert not [k for k in redis.scan_iter() if b"hospitals" in k]
    assert store.names("alice") == ["other"]
    with pytest.raises(NotFoundError):
        store.delete("alice", "hospitals")
    again, created = store.put("alice", "hospitals", columns=SCHEMA)
    assert created and again.version.number == 0 and store.columns("alice", "hospitals")[1]["y"] == []

