"""Prior definitions in Redis: put, read, delete; refits submitted as ordinary jobs; elicited versions.

A refit builds the model's data from the dataset version it runs on, submits it through the queue (seeded,
so a refit of an unchanged dataset version is the same job), and pins what assembly needs to publish
(service.priors.refs.RefitOf). Publishing happens when that job ends (service.priors.publish).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from service import keys
from service.codec import text
from service.datasets import DatasetStore
from service.exceptions import NotFoundError, Problem, SpecError
from service.jobs.record import JobRecord
from service.jobs.store import JobStore
from service.language.expr import NAME_RE as NAME
from service.language.fitted import declared_support
from service.language.ir import Model
from service.priors.definition import DEFAULT_SEED, MAX_EXPORT_ELEMENTS, PriorDefinition, check_name
from service.priors.elicit import elicit
from service.priors.export import MARGINAL_SUPPORTS
from service.priors.publish import metric_label
from service.priors.refs import RefitOf
from service.priors.versions import Versions
from service.sampler import parse_job

MAX_PRIORS = 1_000
"""Prior definitions one tenant may hold."""


@dataclass(frozen=True, kw_only=True)
class PriorHead:
    """A prior as GET /v1/priors/{name} shows it."""

    name: str
    definition: PriorDefinition | None
    """None for a prior that only holds saved (elicited) versions."""
    revision: int
    latest: int | None
    versions: int
    created_at: float
    updated_at: float
    last_refit: dict[str, Any] | None


class PriorStore:
    def __init__(self, *, jobs: JobStore, datasets: DatasetStore) -> None:
        self.r: Any = jobs.r
        self.jobs = jobs
        self.datasets = datasets
        self.versions = Versions(jobs.r)
        self.unschedule: Callable[[str, str], None] | None = None
        """Removes a prior's schedule where it runs (service.priors.schedules.ScheduleStore.forget; the API
        sets it): called by delete before the prior goes."""

    # -- definitions ------------------------------------------------------------------------------

    def put(self, tenant: str, name: str, definition: PriorDefinition) -> tuple[PriorHead, bool]:
        """Create or replace a definition (checked against its dataset's current data); (head, created)."""
        self._name(name)
        self.check(tenant, definition)
        key = keys.prior(tenant, name)
        body = definition.model_dump_json()
        existing = self.r.hget(key, "definition")
        created = not self.r.exists(key)
        if created and self.r.zcard(keys.tenant_priors(tenant)) >= MAX_PRIORS:
            raise SpecError([Problem("", f"a tenant holds at most {MAX_PRIORS} priors; delete one first")])
        if existing is None or text(existing) != body:
            now = time.time()
            pipe = self.r.pipeline()
            pipe.hsetnx(key, "created_at", repr(now))
            pipe.hset(key, mapping={"definition": body, "updated_at": repr(now)})
            pipe.hincrby(key, "revision", 1)
            pipe.zadd(keys.tenant_priors(tenant), {name: now}, nx=True)
            pipe.sadd(keys.PRIOR_TENANTS, tenant)
            pipe.execute()
        return self.get(tenant, name), created

    def check(self, tenant: str, definition: PriorDefinition) -> tuple[Model, dict[str, Any], Any] | None:
        """Problems of a definition that need its dataset: the model against the data (when it has rows),
        the exported variables and their supports. The validated model, the spec with the data and the dataset
        version they came from (model_doc), or None before the first row."""
        try:
            dataset = self.datasets.get(tenant, definition.data_from.dataset)
        except NotFoundError as exc:
            raise SpecError([Problem("data_from.dataset", str(exc))]) from None
        if dataset.version.rows == 0:
            return None
        doc, version = self.model_doc(tenant, definition)
        model, _ = parse_job({"model": doc, "sampler": definition.sampler or {}},
                             limits=self.jobs.settings.cost_limits())
        problems = []
        for i, name in enumerate(definition.export.params):
            node = model.variables.get(name)
            path = f"export.params[{i}]"
            if node is None:
                problems.append(Problem(path, f"{name} is not a param or define of the model; known: "
                                              f"{', '.join(model.variables)}"))
                continue
            support = self._support(model, name)
            if support is None:
                problems.append(Problem(path, f"{name} cannot be exported (discrete, simplex or correlation "
                                              "params have no fitted prior yet)"))
            elif definition.export.method == "marginal" and support not in MARGINAL_SUPPORTS:
                problems.append(Problem(path, f"method marginal fits {', '.join(MARGINAL_SUPPORTS)} variables; "
                                              f"{name} has support {support} (use method mvn)"))
        size = sum(int(np.prod(model.variables[n].shape, dtype=int)) for n in definition.export.params
                   if n in model.variables)
        if size > MAX_EXPORT_ELEMENTS:
            problems.append(Problem("export.params", f"the exported variables have {size} elements; a prior holds at "
                                                     f"most {MAX_EXPORT_ELEMENTS} (its covariance is their square)"))
        keep = (definition.sampler or {}).get("keep")
        if keep is not None:
            missing = [p for p in definition.export.params if p not in keep]
            if missing:
                problems.append(Problem("sampler.keep", f"must keep the exported {', '.join(missing)}"))
        if problems:
            raise SpecError(problems)
        return model, doc, version

    def get(self, tenant: str, name: str) -> PriorHead:
        raw = {text(k): text(v) for k, v in self.r.hgetall(keys.prior(tenant, name)).items()}
        if not raw:
            raise NotFoundError(f"prior {name} not found")
        refits = self.versions.refits(tenant, name, limit=1)
        definition = raw.get("definition")
        return PriorHead(name=name, definition=PriorDefinition.model_validate_json(definition) if definition else None,
                         revision=int(raw.get("revision") or 0),
                         latest=int(raw["latest"]) if "latest" in raw else None,
                         versions=int(raw.get("versions") or 0), created_at=float(raw["created_at"]),
                         updated_at=float(raw.get("updated_at") or raw["created_at"]),
                         last_refit=refits[0] if refits else None)

    def names(self, tenant: str) -> list[str]:
        return [text(n) for n in self.r.zrange(keys.tenant_priors(tenant), 0, -1)]

    def delete(self, tenant: str, name: str) -> None:
        """Remove a prior and every version (jobs that pinned a version keep its numbers in their pin)."""
        self.get(tenant, name)
        if self.unschedule is not None and self.r.exists(keys.prior_schedule(tenant, name)):
            self.unschedule(tenant, name)
        pipe = self.r.pipeline()
        pipe.delete(keys.prior(tenant, name), keys.prior_versions(tenant, name), keys.prior_published(tenant, name),
                    keys.prior_refits(tenant, name), keys.prior_schedule(tenant, name))
        pipe.zrem(keys.tenant_priors(tenant), name)
        pipe.zrem(keys.PRIOR_SCHEDULES, metric_label(tenant, name))
        pipe.execute()

    # -- refits -----------------------------------------------------------------------------------

    def refit(self, tenant: str, name: str) -> tuple[JobRecord, bool]:
        """Submit a refit on the dataset version the definition names (latest: as it is now); (job, created).
        A refit of a dataset version already refitted with the same definition returns that job."""
        head = self.get(tenant, name)
        if head.definition is None:
            raise SpecError([Problem("", f"prior {name} has no definition to refit (PUT /v1/priors/{name})")])
        definition = head.definition
        checked = self.check(tenant, definition)  # reads the dataset once: the data checked are the data submitted
        if checked is None:
            raise SpecError([Problem("data_from.dataset", f"dataset {definition.data_from.dataset} has no rows yet")])
        model, doc, version = checked
        refit = RefitOf(prior=name, revision=head.revision, dataset=definition.data_from.dataset,
                        dataset_version=version.number, dataset_hash=version.hash, dataset_rows=version.rows,
                        export=definition.export.model_dump(), gate=definition.gate.model_dump(),
                        supports={p: self._support(model, p) or "real" for p in definition.export.params})
        sampler = {"seed": DEFAULT_SEED, **(definition.sampler or {})}
        if (warm := self._warm_from(tenant, head, model, sampler, version.number)) is not None:
            sampler = warm
        labels = {"chainyard.prior": name, "chainyard.dataset_version": str(version.number)}
        return self.jobs.submit(tenant, model=doc, sampler=sampler, name=f"refit {name}", labels=labels, refit=refit)

    def _warm_from(self, tenant: str, head: PriorHead, model: Model, sampler: dict[str, Any],
                   dataset_version: int) -> dict[str, Any] | None:
        """The sampler of a refit that warm-starts, or None (cold). It starts from the job of the newest version
        fitted on an older dataset version (so refitting an unchanged dataset version stays the same job), if
        the definition allows it and that job is still kept, with the same parameters."""
        definition = head.definition
        if definition is None or definition.warm_start is None or "warm_start" in sampler:
            return None
        earlier = [v for v in self.versions.all(tenant, head.name)
                   if int((v.get("provenance") or {}).get("dataset_version", dataset_version)) < dataset_version]
        if not earlier:
            return None
        job = (earlier[-1].get("provenance") or {}).get("job")
        dense = bool(sampler.get("dense_mass", False))
        if not isinstance(job, str) or not self.jobs.can_warm_start(tenant, job, model.parameter_layout(), dense):
            return None
        warmup = min(definition.warm_start.warmup, int(sampler.get("warmup", 1000)))
        return {**sampler, "warmup": warmup, "warm_start": {"job": job}}

    def stale(self, tenant: str) -> list[str]:
        """Priors with a definition whose dataset has a newer version than the one their latest version (or
        latest refit attempt) was fitted on, and without a schedule of their own (even a suspended one): what
        the nightly `chainyard refit` refits."""
        out = []
        for name in self.names(tenant):
            if self.r.exists(keys.prior_schedule(tenant, name)):
                continue
            head = self.get(tenant, name)
            if head.definition is None or head.definition.data_from.version != "latest":
                continue
            try:
                current = self.datasets.get(tenant, head.definition.data_from.dataset).version
            except NotFoundError:
                continue
            fitted = head.last_refit.get("dataset_version") if head.last_refit else None
            if current.rows and (fitted is None or current.number > int(fitted)):
                out.append(name)
        return out

    # -- saved versions -----------------------------------------------------------------------------

    def save_elicited(self, tenant: str, name: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Fit expert judgements per variable (service.priors.elicit) and publish them as one marginal version
        (source `elicited`); creates the prior if it does not exist. (number, version)."""
        self._name(name)
        if not params:
            raise SpecError([Problem("params", "name at least one variable with its judgements")])
        members, marginals, fits, problems = [], [], {}, []
        for var, body in params.items():
            if not NAME.match(var):
                problems.append(Problem(f"params.{var}", "not a valid variable name"))
                continue
            try:
                result = elicit(body)
            except SpecError as exc:
                problems += [Problem(f"params.{var}.{p.path}".rstrip("."), p.message) for p in exc.problems]
                continue
            best = result.best
            members.append({"name": var, "shape": [], "support": best.support})
            marginals.append([{"weight": 1.0, "dist": best.family, "args": dict(best.params)}])
            fits[var] = {"family": best.family, "spec": best.spec, "error": best.error, "params": best.params}
        if problems:
            raise SpecError(problems)
        key = keys.prior(tenant, name)
        if not self.r.exists(key):
            if self.r.zcard(keys.tenant_priors(tenant)) >= MAX_PRIORS:
                raise SpecError([Problem("", f"a tenant holds at most {MAX_PRIORS} priors; delete one first")])
            now = time.time()
            pipe = self.r.pipeline()
            pipe.hsetnx(key, "created_at", repr(now))
            pipe.hsetnx(key, "revision", 0)
            pipe.zadd(keys.tenant_priors(tenant), {name: now}, nx=True)
            pipe.sadd(keys.PRIOR_TENANTS, tenant)
            pipe.execute()
        export = {"method": "marginal", "members": members, "marginals": marginals, "inflate": 1.0, "robust": None}
        number = self.jobs.publisher.published(tenant=tenant, prior=name, source="elicited",
                                               version={"export": export, "elicitation": fits})
        return self.versions.read(tenant, name, number)

    def tenants(self) -> list[str]:
        return sorted(text(t) for t in self.r.smembers(keys.PRIOR_TENANTS))

    # -- data -------------------------------------------------------------------------------------

    def model_doc(self, tenant: str, definition: PriorDefinition) -> tuple[dict[str, Any], Any]:
        """The model spec with the dataset's columns as data (graph specs: string columns as integer codes
        and a coordinate of labels), and the dataset version used."""
        source = definition.data_from
        dataset = self.datasets.get(tenant, source.dataset)
        number = None if source.version == "latest" else source.version
        version, columns = self.datasets.columns(tenant, source.dataset, number)
        mapping = source.columns if source.columns is not None else {c: c for c in dataset.columns}
        doc = dict(definition.model)
        data = dict(doc.get("data") or {})
        coords = dict(doc.get("coords") or {})
        graph = "formula" not in doc
        problems = []
        for name, column in mapping.items():
            path = f"data_from.columns.{name}"
            if column not in columns:
                problems.append(Problem(path, f"dataset {source.dataset} has no column {column}; it has "
                                              f"{', '.join(dataset.columns)}"))
            elif name in data:
                problems.append(Problem(path, f"the model's data already has {name}"))
            elif graph and dataset.columns[column] in ("string", "category"):
                labels = list(dict.fromkeys(columns[column]))
                codes = {label: i for i, label in enumerate(labels)}
                data[name] = [codes[v] for v in columns[column]]
                if name in coords:
                    problems.append(Problem(path, f"the model's coords already have {name}"))
                coords[name] = labels
            else:
                data[name] = columns[column]
        if problems:
            raise SpecError(problems)
        doc["data"] = data
        if graph and coords:
            doc["coords"] = coords
        return doc, version

    @staticmethod
    def _support(model: Model, name: str) -> str | None:
        params = {p.output: p for p in model.params}
        if name in params:
            return declared_support(params[name], model.data)
        return "real"  # a define: no declared support

    @staticmethod
    def _name(name: str) -> None:
        problem = check_name(name)
        if problem:
            raise SpecError([Problem("name", problem)])
