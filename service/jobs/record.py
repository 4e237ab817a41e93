"""Typed job and chain records: a stored Redis hash is read once into a frozen dataclass (arq's `JobDef`), and
nobody else indexes the hash by string. States and phases are enums used everywhere."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from service.codec import text
from service.priors.refs import PriorPin, RefitOf, pins_from_json, pins_to_json, refit_from_json, refit_to_json
from service.sampler import SamplerSettings
from service.until import Round


class JobState(StrEnum):
    """Where a job is in its life: queued -> running -> one of the terminal states."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """The job ended: nothing runs for it any more and its retention clock runs."""
        return self in TERMINAL


TERMINAL: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class ChainPhase(StrEnum):
    """Where one chain is."""

    QUEUED = "queued"
    WARMUP = "warmup"
    SAMPLING = "sampling"
    DONE = "done"
    """Its draws are stored with the job."""
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class JobRecord:
    """The job hash (`keys.job`). The pinned model is stored beside it (`keys.job_model`), so reading a record
    costs the same for any model size."""

    id: str
    tenant: str
    """Owner; another tenant's request for this id is a 404."""
    name: str | None
    labels: dict[str, str]
    state: JobState
    sampler: SamplerSettings
    """Settings as accepted, the seed resolved (a job without one got a random seed at submit)."""
    model_name: str | None
    """The spec's `name`, the `model` label of its metrics."""
    model_fingerprint: str
    """sha256 of the pinned model (service.jobs.pinned)."""
    structure: str
    """Model.structure_key(): jobs with the same one share compiled programs."""
    layout: str = ""
    """Model.parameter_layout(): a job can warm-start from a job with the same one."""
    created_at: float
    deadline: float
    """Unix time after which a still-running job fails (Settings.job_timeout_seconds after submit)."""
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    priors: tuple[PriorPin, ...] = ()
    """The prior versions its `priors_from` resolved to at submit (a job stays reproducible after `latest`
    moves)."""
    refit: RefitOf | None = None
    """Set on a prior's refit job: assembly applies the gate and publishes from it."""
    draws_target: int | None = None
    """Draws per chain the chains run to now: the current round's end with `until`, the extended length after
    an extension; None: `sampler.draws`."""
    rounds: tuple[Round, ...] = ()
    """The decisions of `until` so far, one per finished round."""
    stopped: str | None = None
    """Why sampling stopped (`until`), once it has."""
    extensions: tuple[dict[str, Any], ...] = ()
    """Each extension: {draws (added), from, to, at}."""

    @property
    def seed(self) -> int:
        assert self.sampler.seed is not None  # resolved at submit
        return self.sampler.seed

    @property
    def chains(self) -> int:
        return self.sampler.chains

    @property
    def draws(self) -> int:
        """Draws per chain (iterations after warmup) the chains run to now."""
        return self.draws_target if self.draws_target is not None else self.sampler.draws

    @property
    def iterations(self) -> int:
        """Iterations of each chain the chains run to now, warmup included."""
        return self.sampler.warmup + self.draws

    @property
    def model_label(self) -> str:
        """The `model` label of the job's metrics: the spec's name, else the job's, else 'unnamed' (bounded)."""
        return (self.model_name or self.name or "unnamed")[:100]

    def to_hash(self) -> dict[str, str]:
        out = {
            "id": self.id,
            "tenant": self.tenant,
            "name": self.name or "",
            "labels": json.dumps(self.labels),
            "state": self.state.value,
            "sampler": self.sampler.model_dump_json(),
            "model_name": self.model_name or "",
            "model_fingerprint": self.model_fingerprint,
            "structure": self.structure,
            "layout": self.layout,
            "created_at": repr(self.created_at),
            "deadline": repr(self.deadline),
        }
        for key in ("started_at", "finished_at"):
            if (value := getattr(self, key)) is not None:
                out[key] = repr(value)
        if self.error:
            out["error"] = self.error
        if self.priors:
            out["priors"] = pins_to_json(self.priors)
        if self.refit is not None:
            out["refit"] = refit_to_json(self.refit)
        out.update(self.sampling_fields())
        return out

    def sampling_fields(self) -> dict[str, str]:
        """The hash fields of how far the chains run (rewritten by a new round and an extension)."""
        out = {}
        if self.draws_target is not None:
            out["draws_target"] = str(self.draws_target)
        if self.rounds:
            out["rounds"] = json.dumps([r.to_json() for r in self.rounds])
        if self.stopped:
            out["stopped"] = self.stopped
        if self.extensions:
            out["extensions"] = json.dumps(list(self.extensions))
        return out

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> JobRecord:
        h = {text(k): text(v) for k, v in raw.items()}
        return cls(
            id=h["id"],
            tenant=h["tenant"],
            name=h.get("name") or None,
            labels=json.loads(h.get("labels") or "{}"),
            state=JobState(h["state"]),
            sampler=SamplerSettings.model_validate_json(h["sampler"]),
            model_name=h.get("model_name") or None,
            model_fingerprint=h.get("model_fingerprint", ""),
            structure=h.get("structure", ""),
            layout=h.get("layout", ""),
            created_at=float(h["created_at"]),
            deadline=float(h["deadline"]),
            started_at=_float(h.get("started_at")),
            finished_at=_float(h.get("finished_at")),
            error=h.get("error") or None,
            priors=pins_from_json(h.get("priors")),
            refit=refit_from_json(h.get("refit")),
            draws_target=int(h["draws_target"]) if h.get("draws_target") else None,
            rounds=tuple(Round.from_json(r) for r in json.loads(h.get("rounds") or "[]")),
            stopped=h.get("stopped") or None,
            extensions=tuple(json.loads(h.get("extensions") or "[]")),
        )


@dataclass(frozen=True, kw_only=True)
class ChainProgress:
    """The chain hash (`keys.chain`): one chain's progress, written by the worker running it."""

    chain: int
    phase: ChainPhase = ChainPhase.QUEUED
    iteration: int = 0
    """Iterations done, warmup included."""
    of: int = 0
    """Iterations in all (warmup + draws)."""
    divergences: int = 0
    """Divergent transitions after warmup so far."""
    step_size: float | None = None
    worker: str | None = None
    """The worker that claimed it last."""
    attempts: int = 0
    """Times a worker started (or resumed) it; over Settings.max_attempts fails the job."""
    error: str | None = None
    """The last error of an attempt that failed."""
    stored: int = 0
    """Iterations of the draws and state stored with the job (0: none yet)."""
    gradients: int = 0
    """Gradient evaluations of the stored chain, warmup included."""
    warmup_gradients: int = 0
    """Gradient evaluations of its warmup."""

    def to_hash(self) -> dict[str, str | int | float]:
        out: dict[str, str | int | float] = {"phase": self.phase.value, "iteration": self.iteration, "of": self.of,
                                             "divergences": self.divergences, "attempts": self.attempts}
        if self.step_size is not None:
            out["step_size"] = repr(self.step_size)
        if self.worker:
            out["worker"] = self.worker
        if self.error:
            out["error"] = self.error
        return out

    @classmethod
    def from_hash(cls, chain: int, raw: Mapping[Any, Any], *, of: int) -> ChainProgress:
        """A chain hash as stored (fields missing while it is queued; `of` then from the job)."""
        h = {text(k): text(v) for k, v in raw.items()}
        return cls(
            chain=chain,
            phase=ChainPhase(h.get("phase") or ChainPhase.QUEUED),
            iteration=int(h.get("iteration") or 0),
            of=int(h.get("of") or of),
            divergences=int(h.get("divergences") or 0),
            step_size=_float(h.get("step_size")),
            worker=h.get("worker") or None,
            attempts=int(h.get("attempts") or 0),
            error=h.get("error") or None,
            stored=int(h.get("stored") or 0),
            gradients=int(h.get("gradients") or 0),
            warmup_gradients=int(h.get("warmup_gradients") or 0),
        )


def _float(value: str | None) -> float | None:
    return float(value) if value else None
