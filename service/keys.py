"""Every Redis key chainyard uses, and their lifetimes. Nobody else spells a key (arq's constants.py)."""

from __future__ import annotations

PREFIX = "cy"

TASKS = f"{PREFIX}:tasks"
"""Stream of dispatched chain tasks {job, chain, tenant}; consumer group GROUP; owned by service.queue.

Lifetime of a task: queued at submit in its tenant's list (`tenant_queue`, one 'job:chain' item per chain);
dispatched from there into this stream, round-robin over tenants, when fewer than the dispatch window wait
in it; delivered to one worker and pending there while the chain runs (refreshed by the worker, reclaimed by
another after the visibility timeout); acknowledged and deleted together (XACK + XDEL in one script) once
the chain's draws are stored or the chain no longer needs to run (job ended or deleted). A job that ends
removes its chains still queued. So the stream holds exactly the dispatched tasks not yet done: XLEN is 0
when every job has ended, and XLEN minus the group's pending count is the number dispatched and waiting."""
GROUP = "workers"


def tenant_queue(tenant: str) -> str:
    """List: a tenant's queued tasks ('job:chain'), oldest first, until dispatched into TASKS."""
    return f"{PREFIX}:queue:{tenant}"


TENANT_RING = f"{PREFIX}:tenant-ring"
"""List: tenants with queued tasks, in round-robin order (dispatch rotates it)."""
TENANT_INFLIGHT = f"{PREFIX}:tenant-inflight"
"""Hash: tenant -> its tasks in TASKS (dispatched, not yet acknowledged)."""
TENANT_LIMITS = f"{PREFIX}:tenant-limits"
"""Hash: tenant -> the most of its tasks dispatched at once (its running-chains quota; 0 or absent: none)."""


def submissions(tenant: str, minute: int) -> str:
    """Counter with a TTL of two minutes: a tenant's job submissions in one clock minute (its rate quota)."""
    return f"{PREFIX}:submissions:{tenant}:{minute}"


def job(job_id: str) -> str:
    """Hash: the job record (tenant, state, request, seed, times, error)."""
    return f"{PREFIX}:job:{job_id}"


def job_model(job_id: str) -> str:
    """String: the model pinned at submit (service.jobs.pinned: graph spec with data, JSON), kept apart from
    the record so that reading a record costs the same for any model size."""
    return f"{PREFIX}:model:{job_id}"


def tenant_jobs(tenant: str) -> str:
    """Sorted set: a tenant's job ids by submission time."""
    return f"{PREFIX}:jobs:{tenant}"


def chain(job_id: str, chain_index: int) -> str:
    """Hash: one chain's progress (phase, iteration, of, divergences, step_size, worker, attempts)."""
    return f"{PREFIX}:chain:{job_id}:{chain_index}"


def live_blocks(job_id: str, chain_index: int) -> str:
    """List: npz blocks of the draws so far, for live diagnostics; reset when a chain restarts."""
    return f"{PREFIX}:live:{job_id}:{chain_index}"


def chain_draws(job_id: str, chain_index: int) -> str:
    """List of chunks (service.jobs.blobs): the finished chain's draws and stats (npz). Written before its task
    is acknowledged."""
    return f"{PREFIX}:draws:{job_id}:{chain_index}"


def chain_state(job_id: str, chain_index: int) -> str:
    """List of chunks (service.jobs.blobs): the chain's full sampler state after its last stored round (npz,
    service.codec.pack_state), stored with its draws, so that its next round, an extension or a warm start runs
    on any worker."""
    return f"{PREFIX}:state:{job_id}:{chain_index}"


def job_warm(job_id: str) -> str:
    """List of chunks: the final states of the job that `sampler.warm_start` names, copied at submit (so the
    warm start does not depend on that job's retention)."""
    return f"{PREFIX}:warm:{job_id}"


def result(job_id: str) -> str:
    """Hash: the finished job's summary (JSON)."""
    return f"{PREFIX}:result:{job_id}"


RESULT_FILES = ("netcdf", "draws")
"""The finished job's files: the InferenceData as netCDF, the posterior draws as npz."""


def result_file(job_id: str, name: str) -> str:
    """List of chunks (service.jobs.blobs): one of RESULT_FILES."""
    return f"{PREFIX}:file:{job_id}:{name}"


def staging(key: str, writer: str) -> str:
    """List of chunks with a TTL: a value being written to `key`, renamed onto it when complete (so readers
    never see half of it, and a writer that dies leaves only a key that expires)."""
    return f"{key}:staging:{writer}"


def assembling(job_id: str) -> str:
    """String lock: one process assembles a job's result."""
    return f"{PREFIX}:assembling:{job_id}"


ASSEMBLY_DUE = f"{PREFIX}:assembly-due"
"""Sorted set: running jobs whose chains are all stored, scored by when that happened. Whoever stores a job's
last chain adds it; finishing the job removes it. Workers sweep it, so a job whose assembler died (or whose
lock expired) is assembled by another process instead of staying `running`."""


def diagnostics(job_id: str) -> str:
    """Hash: the job's latest convergence figures (R-hat, ESS, divergences, progress), as exported to
    Prometheus; refreshed by the workers while it runs, final once it ended."""
    return f"{PREFIX}:diag:{job_id}"


def diagnostics_due(job_id: str) -> str:
    """String with a TTL of the refresh interval: one process recomputes a job's diagnostics per interval."""
    return f"{PREFIX}:diag-due:{job_id}"


DIAGNOSTICS_INDEX = f"{PREFIX}:diag-index"
"""Sorted set: jobs whose figures are exported, scored by when to stop (+inf while running)."""


def jobs_in_state(state: str) -> str:
    """Sorted set: job ids in one state, scored by when they leave it (+inf while queued or running; the end
    of retention once finished), so that counting needs no scan."""
    return f"{PREFIX}:state:{state}"


WORKERS = f"{PREFIX}:workers"
"""Sorted set: worker name -> last heartbeat (unix time)."""

METRICS_LEADER = f"{PREFIX}:metrics-leader"
"""String with a TTL: the one process that exports the cluster-wide metrics (per-job figures, queue, states)."""
METRICS_LEADER_SECONDS = 45.0
"""The lease lapses if its holder is not scraped for this long (three 15 s scrape intervals)."""

def prior(tenant: str, name: str) -> str:
    """Hash: a prior definition (service.priors.store): `definition` (JSON), `revision`, times, `versions` (the
    last version number given out) and `latest` (the current one; absent until the first is published)."""
    return f"{PREFIX}:prior:{tenant}:{name}"


def tenant_priors(tenant: str) -> str:
    """Sorted set: a tenant's prior names by creation time."""
    return f"{PREFIX}:priors:{tenant}"


def prior_versions(tenant: str, name: str) -> str:
    """Hash: version number -> the published version (JSON: export, provenance, diagnostics). Immutable once
    written; kept as long as the prior exists (jobs pin versions, so none is ever replaced)."""
    return f"{PREFIX}:prior-version:{tenant}:{name}"


def prior_published(tenant: str, name: str) -> str:
    """Hash: refit job id -> the version it published, so that a job assembled twice publishes once."""
    return f"{PREFIX}:prior-published:{tenant}:{name}"


def prior_refits(tenant: str, name: str) -> str:
    """List, newest first, bounded (service.priors.store.REFIT_LOG): every refit's outcome (JSON: job, dataset
    version, outcome, reason, diagnostics, version published, times)."""
    return f"{PREFIX}:prior-refits:{tenant}:{name}"


PRIOR_VERSIONS = f"{PREFIX}:prior-versions"
"""Hash: '<tenant>/<prior>' -> version number of its latest published version (the exported metrics)."""

PRIOR_REFITS = f"{PREFIX}:prior-refits"
"""Hash: '<tenant>/<prior>|<outcome>' -> number of refits with that outcome."""

PRIOR_LAST_OUTCOME = f"{PREFIX}:prior-last-outcome"
"""Hash: '<tenant>/<prior>' -> outcome of its latest refit (succeeded | failed)."""


def job_keys(job_id: str, chains: int) -> list[str]:
    """Every key of one job (for delete and retention)."""
    keys = [job(job_id), job_model(job_id), result(job_id), assembling(job_id), diagnostics(job_id),
            diagnostics_due(job_id), job_warm(job_id), *(result_file(job_id, name) for name in RESULT_FILES)]
    for c in range(chains):
        keys += [chain(job_id, c), live_blocks(job_id, c), chain_draws(job_id, c), chain_state(job_id, c)]
    return keys


ASSEMBLE_LOCK_SECONDS = 120


# -- datasets (service.datasets). The tenant comes last in these keys: a tenant may contain ':', a dataset's name
# cannot, so no two (tenant, name) pairs share a key.


def dataset(tenant: str, name: str) -> str:
    """Hash: a dataset's head (service.datasets.record.Dataset: columns, description, latest version, times).
    Every append and re-declaration WATCHes it, so changes to one dataset serialize across processes."""
    return f"{PREFIX}:dataset:{name}:{tenant}"


def dataset_versions(tenant: str, name: str) -> str:
    """List: every version of a dataset (DatasetVersion as JSON), indexed by version number (0: the schema)."""
    return f"{PREFIX}:dataset-versions:{name}:{tenant}"


def dataset_rows(tenant: str, name: str, number: int) -> str:
    """List of chunks (service.jobs.blobs): the rows that version `number` appended, as npz; never changed."""
    return f"{PREFIX}:dataset-rows:{number}:{name}:{tenant}"


def dataset_append(tenant: str, name: str) -> str:
    """Base of an append's staging keys (`staging(dataset_append(...), writer)`, with blobs' TTL): the rows are
    written there before their version number is known, then renamed onto `dataset_rows` by the commit."""
    return f"{PREFIX}:dataset-append:{name}:{tenant}"


def tenant_datasets(tenant: str) -> str:
    """Sorted set, every score 0 (so in name order): a tenant's dataset names."""
    return f"{PREFIX}:datasets:{tenant}"


def dataset_keys(tenant: str, name: str, versions: int) -> list[str]:
    """Every key of one dataset whose latest version is `versions` (for delete); not the tenant's index."""
    return [dataset(tenant, name), dataset_versions(tenant, name),
            *(dataset_rows(tenant, name, n) for n in range(1, versions + 1))]


PRIOR_TENANTS = f"{PREFIX}:prior-tenants"
"""Set: tenants that hold priors (the nightly `chainyard refit` walks them)."""


# -- prior refit schedules (service.priors.schedules)


def prior_schedule(tenant: str, name: str) -> str:
    """Hash: a prior's refit schedule (the source of truth wherever it runs): `cron`, `timezone`, `suspend`
    ('1'/'0'), created_at, updated_at, and its last run: `last_at` (unix), `last_scheduled` (the instant it ran
    for), `last_job`, `last_outcome` (submitted | unchanged | error | missed), `last_message`. Deleted with
    the schedule and with the prior."""
    return f"{PREFIX}:prior-schedule:{tenant}:{name}"


PRIOR_SCHEDULES = f"{PREFIX}:prior-schedules"
"""Sorted set: '<tenant>/<prior>' (service.priors.publish.metric_label; a prior's name has no '/') -> unix time
of its next scheduled run, for every schedule (+inf while suspended). The local scheduler fires the members
whose time has come and moves each to its next instant with one compare-and-set script, so that of several
API processes exactly one fires each run; chainyard_prior_next_refit_timestamp reads it."""
