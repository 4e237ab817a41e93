"""Datasets in Redis, per tenant: declare, append (each a new immutable version), read as of a version, delete.

Every change to a dataset is a transaction that WATCHes its head (service.keys.dataset), so changes from any
number of processes serialize: one whose head changed between its read and its commit is retried. An append's
rows are staged once, before that (chunked, with a TTL), and the commit that wins renames them onto their
version's key in the same transaction that moves the head, so a version and its rows appear together or not
at all, and an append that fails leaves nothing behind.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from redis.exceptions import WatchError

from service import keys
from service.codec import text
from service.config import Settings
from service.datasets import content, rows
from service.datasets.record import Dataset, DatasetVersion
from service.datasets.schema import (
    chain_hash,
    description_problem,
    name_problem,
    parse_columns,
    same_columns,
    schema_hash,
)
from service.exceptions import ConflictError, NotFoundError, Problem, SpecError
from service.jobs import blobs
from service.language.text import shown

T = TypeVar("T")

MAX_ATTEMPTS = 500
"""Commits of one request retried after a concurrent change, at most (then a 409: retry later)."""
RECENT = 5
"""Versions shown with a dataset."""
_jitter = random.Random()  # noqa: S311 - backoff jitter, not a secret


class DatasetStore:
    def __init__(self, redis: Any, settings: Settings) -> None:
        self.r: Any = redis  # redis-py's annotations do not follow decode_responses
        self.settings = settings

    # -- declare and append -----------------------------------------------------------------------

    def put(self, tenant: str, name: str, *, columns: dict[str, str],
            description: str | None = None) -> tuple[Dataset, bool]:
        """Declare a dataset (version 0, no rows); (dataset, created). The same columns again change nothing
        but a given description; other columns replace the schema of a dataset without rows, and are a
        ConflictError on one with rows."""
        schema = parse_columns(columns, name)
        if (problem := description_problem(description)) is not None:
            raise SpecError([problem])
        head = keys.dataset(tenant, name)

        def step(pipe: Any) -> tuple[Dataset, bool]:
            raw = pipe.hgetall(head)
            now = time.time()
            first = DatasetVersion(number=0, rows=0, added=0, hash=schema_hash(schema), created_at=now)
            if not raw:
                dataset = Dataset(tenant=tenant, name=name, columns=schema, description=description, version=first,
                                  created_at=now, updated_at=now)
                self._declare(pipe, dataset)
                pipe.zadd(keys.tenant_datasets(tenant), {name: 0})
                return dataset, True
            current = Dataset.from_hash(raw)
            if same_columns(current.columns, schema):
                if description is None or description == current.description:
                    return current, False
                updated = replace(current, description=description, updated_at=now)
                pipe.multi()
                pipe.hset(head, mapping={k: v for k, v in updated.to_hash().items()
                                         if k in ("description", "updated_at")})
                return updated, False
            if current.version.number > 0:
                raise ConflictError(f"dataset {name} has {current.version.rows} rows in {current.version.number} "
                                    "version(s): its columns cannot change (delete it, or declare a new dataset)")
            updated = replace(current, columns=schema, version=first, updated_at=now,
                              description=current.description if description is None else description)
            self._declare(pipe, updated)
            return updated, False

        return self._transact(head, step)

    def _declare(self, pipe: Any, dataset: Dataset) -> None:
        pipe.multi()
        pipe.hset(keys.dataset(dataset.tenant, dataset.name), mapping=dataset.to_hash())
        versions = keys.dataset_versions(dataset.tenant, dataset.name)
        pipe.delete(versions)
        pipe.rpush(versions, dataset.version.to_json())

    def append(self, tenant: str, name: str, body: Any, *, csv_text: str | None = None) -> DatasetVersion:
        """Append rows (JSON {columns} or {rows} in `body`, or CSV text): all of them as one new version, or
        none and a SpecError naming every bad row and column."""
        dataset = self.get(tenant, name)
        added = rows.parse(dataset.columns, body, csv_text=csv_text, max_rows=self.settings.max_append_rows)
        count = len(next(iter(added.values())))
        self._check_limits(dataset, count)
        canonical = content.canonical(dataset.columns, added)
        head = keys.dataset(tenant, name)
        staging = blobs.stage(self.r, keys.dataset_append(tenant, name), content.pack(dataset.columns, added),
                              chunk_bytes=self.settings.chunk_bytes)

        def step(pipe: Any) -> DatasetVersion:
            raw = pipe.hgetall(head)
            if not raw:
                raise NotFoundError(f"dataset {name} not found (deleted during the append)")
            current = Dataset.from_hash(raw)
            if current.created_at != dataset.created_at or not same_columns(current.columns, dataset.columns):
                raise ConflictError(f"dataset {name} was declared again during the append; send the rows again")
            self._check_limits(current, count)
            if not pipe.exists(staging):
                raise ConflictError("the append's staged rows expired before it could commit; send them again")
            previous = current.version
            version = DatasetVersion(number=previous.number + 1, rows=previous.rows + count, added=count,
                                     hash=chain_hash(previous.hash, canonical), created_at=time.time())
            stored = keys.dataset_rows(tenant, name, version.number)
            pipe.multi()
            pipe.rename(staging, stored)
            pipe.persist(stored)
            pipe.hset(head, mapping={"version": version.to_json(), "updated_at": repr(version.created_at)})
            pipe.rpush(keys.dataset_versions(tenant, name), version.to_json())
            return version

        try:
            return self._transact(head, step)
        finally:
            self.r.delete(staging)  # renamed away by a commit: then there is nothing to delete

    def _check_limits(self, dataset: Dataset, added: int) -> None:
        total = dataset.version.rows + added
        cells = total * len(dataset.columns)
        if total > self.settings.max_dataset_rows:
            raise SpecError([Problem("rows", f"the dataset would hold {total} rows; this server keeps at most "
                                             f"{self.settings.max_dataset_rows} per dataset (max_dataset_rows)")])
        if cells > self.settings.max_dataset_cells:
            raise SpecError([Problem("rows", f"the dataset would hold {cells} values ({total} rows x "
                                             f"{len(dataset.columns)} columns); this server keeps at most "
                                             f"{self.settings.max_dataset_cells} per dataset (max_dataset_cells)")])

    def _transact(self, key: str, step: Callable[[Any], T]) -> T:
        """step(pipe) under WATCH of `key`: it reads, then (if it writes) calls pipe.multi() and queues its writes;
        run again from the start whenever `key` changed before the writes executed."""
        for attempt in range(MAX_ATTEMPTS):
            with self.r.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    result = step(pipe)
                    if pipe.explicit_transaction:
                        pipe.execute()
                    return result
                except WatchError:
                    time.sleep(_jitter.uniform(0, min(0.05, 0.0005 * 2 ** min(attempt, 10))))
        raise ConflictError("the dataset kept changing while this request tried to commit; retry")

    # -- read -------------------------------------------------------------------------------------

    def get(self, tenant: str, name: str) -> Dataset:
        """A tenant's dataset; NotFoundError if there is none of that name (another tenant's included)."""
        raw = self.r.hgetall(keys.dataset(tenant, name)) if name_problem(name) is None else None
        if not raw:
            raise NotFoundError(f"dataset {shown(name)} not found")
        return Dataset.from_hash(raw)

    def recent(self, tenant: str, name: str, count: int = RECENT) -> tuple[Dataset, list[DatasetVersion]]:
        """The dataset and its last `count` versions, oldest first."""
        dataset = self.get(tenant, name)
        total = dataset.version.number + 1
        page, _ = self.versions(tenant, name, offset=max(0, total - count), limit=count)
        return dataset, page

    def versions(self, tenant: str, name: str, *, offset: int = 0,
                 limit: int = 100) -> tuple[list[DatasetVersion], int]:
        """Versions offset .. offset+limit-1 in number order, and how many there are (latest number + 1)."""
        total = self.get(tenant, name).version.number + 1
        if limit <= 0 or offset >= total:
            return [], total
        raw = self.r.lrange(keys.dataset_versions(tenant, name), max(0, offset), max(0, offset) + limit - 1)
        return [DatasetVersion.from_json(v) for v in raw], total

    def version(self, tenant: str, name: str, number: int | None = None) -> DatasetVersion:
        """Version `number` (None: the latest); NotFoundError for a number it does not have."""
        dataset = self.get(tenant, name)
        if number is None:
            return dataset.version
        raw = self.r.lindex(keys.dataset_versions(tenant, name), number) if 0 <= number <= dataset.version.number \
            else None
        if raw is None:
            raise NotFoundError(f"dataset {name} has no version {number} (the latest is {dataset.version.number})")
        return DatasetVersion.from_json(raw)

    def columns(self, tenant: str, name: str,
                number: int | None = None) -> tuple[DatasetVersion, dict[str, list[Any]]]:
        """The rows as of version `number` (None: the latest), column by column in schema order: float columns
        as floats, int columns as ints, string columns as str."""
        dataset = self.get(tenant, name)
        version = self.version(tenant, name, number)
        pipe = self.r.pipeline(transaction=False)
        for n in range(1, version.number + 1):
            pipe.lrange(keys.dataset_rows(tenant, name, n), 0, -1)
        out: dict[str, list[Any]] = {col: [] for col in dataset.columns}
        for parts in pipe.execute():
            if not parts:
                raise NotFoundError(f"dataset {name} not found (deleted while it was read)")
            try:
                appended = content.unpack(dataset.columns, b"".join(bytes(p) for p in parts))
            except KeyError:  # deleted and declared again with other columns while it was read
                raise ConflictError(f"dataset {name} changed while it was read; retry") from None
            for col, values in appended.items():
                out[col].extend(values)
        return version, out

    def names(self, tenant: str) -> list[str]:
        """The tenant's dataset names, in name order."""
        return [text(n) for n in self.r.zrange(keys.tenant_datasets(tenant), 0, -1)]

    def datasets(self, tenant: str) -> list[Dataset]:
        """The tenant's datasets, in name order."""
        pipe = self.r.pipeline(transaction=False)
        for name in self.names(tenant):
            pipe.hgetall(keys.dataset(tenant, name))
        return [Dataset.from_hash(raw) for raw in pipe.execute() if raw]

    # -- delete -----------------------------------------------------------------------------------

    def delete(self, tenant: str, name: str) -> None:
        """Remove the dataset, every version and its rows; NotFoundError if there is none."""
        self.get(tenant, name)
        head = keys.dataset(tenant, name)

        def step(pipe: Any) -> None:
            raw = pipe.hgetall(head)
            if not raw:
                raise NotFoundError(f"dataset {name} not found")
            pipe.multi()
            pipe.unlink(*keys.dataset_keys(tenant, name, Dataset.from_hash(raw).version.number))
            pipe.zrem(keys.tenant_datasets(tenant), name)

        self._transact(head, step)
