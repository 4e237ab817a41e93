"""A dataset's records as stored: its head (one hash) and its versions (JSON items of a list)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from service.codec import text


@dataclass(frozen=True)
class DatasetVersion:
    """One immutable version of a dataset: 0 when declared, one more per append."""

    number: int
    """0 for the declared schema, N after the N-th append."""
    rows: int
    """Rows of the dataset as of this version (all appends 1..number)."""
    added: int
    """Rows this version's append added (0 for version 0)."""
    hash: str
    """sha256 hex. Version 0: of the canonical schema JSON; version N: of version N-1's hash followed by the
    canonical bytes of the rows appended (service.datasets.rows.canonical). The same appends in the same order
    give the same hash, whichever form (JSON columns or rows, CSV) carried them."""
    created_at: float
    """Unix time of the declaration or the append."""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> DatasetVersion:
        doc = json.loads(raw)
        return cls(number=int(doc["number"]), rows=int(doc["rows"]), added=int(doc["added"]), hash=str(doc["hash"]),
                   created_at=float(doc["created_at"]))


@dataclass(frozen=True)
class Dataset:
    """A dataset's head: its schema and its latest version."""

    tenant: str
    """The tenant that owns it; datasets of other tenants are not found."""
    name: str
    columns: dict[str, str]
    """Column -> `float`, `int` or `string` (declared `category` is stored as `string`), in declared order."""
    description: str | None
    version: DatasetVersion
    """The latest version."""
    created_at: float
    """When it was first declared (a re-declaration of an empty dataset keeps it)."""
    updated_at: float
    """The last declaration, description change or append."""

    def to_hash(self) -> dict[str, str]:
        return {"tenant": self.tenant, "name": self.name, "columns": json.dumps(self.columns),
                "description": json.dumps(self.description), "version": self.version.to_json(),
                "created_at": repr(self.created_at), "updated_at": repr(self.updated_at)}

    @classmethod
    def from_hash(cls, raw: dict[Any, Any]) -> Dataset:
        fields = {text(k): text(v) for k, v in raw.items()}
        return cls(tenant=fields["tenant"], name=fields["name"], columns=dict(json.loads(fields["columns"])),
                   description=json.loads(fields["description"]),
                   version=DatasetVersion.from_json(fields["version"]), created_at=float(fields["created_at"]),
                   updated_at=float(fields["updated_at"]))
