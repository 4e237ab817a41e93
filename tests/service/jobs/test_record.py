"""The typed job and chain records: hash round trips, defaults, enums."""

from __future__ import annotations

import pytest

from service.jobs.record import TERMINAL, ChainPhase, ChainProgress, JobRecord, JobState
from service.sampler import SamplerSettings


def record(**changes: object) -> JobRecord:
    fields: dict[str, object] = dict(
        id="j1", tenant="alice", name="radon", labels={"team": "a"}, state=JobState.QUEUED,
        sampler=SamplerSettings(chains=3, warmup=20, draws=30, seed=5), model_name="eight schools",
        model_fingerprint="f" * 64, structure="s" * 64, created_at=1.5, deadline=61.5)
    fields.update(changes)
    return JobRecord(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("changes", [{}, {"state": JobState.FAILED, "started_at": 2.25, "finished_at": 3.125,
                                          "error": "chain 1: boom"}, {"name": None, "model_name": None, "labels": {}}])
def test_job_record_round_trips_through_its_hash(changes: dict[str, object]) -> None:
    r = record(**changes)
    stored = {k.encode(): v.encode() for k, v in r.to_hash().items()}  # as Redis returns it
    assert JobRecord.from_hash(stored) == r


def test_derived_fields() -> None:
    r = record(name=None)
    assert (r.seed, r.chains, r.iterations) == (5, 3, 50)
    assert r.model_label == "eight schools"
    assert record(model_name=None).model_label == "radon"
    assert record(model_name=None, name=None).model_label == "unnamed"
    assert len(record(model_name="x" * 500).model_label) == 100


def test_terminal_states() -> None:
    assert {s for s in JobState if s.terminal} == TERMINAL == {JobState.SUCCEEDED, JobState.FAILED,
                                                                 JobState.CANCELLED}
    assert JobState("running") is JobState.RUNNING and JobState.RUNNING == "running"


def test_chain_progress_of_a_queued_chain_takes_its_length_from_the_job() -> None:
    assert ChainProgress.from_hash(2, {}, of=2000) == ChainProgress(chain=2, of=2000)
    stored = ChainProgress(chain=0, phase=ChainPhase.SAMPLING, iteration=120, of=200, divergences=3,
                           step_size=0.375, worker="worker-1", attempts=2, error="OSError: disk")
    raw = {k.encode(): str(v).encode() for k, v in stored.to_hash().items()}
    assert ChainProgress.from_hash(0, raw, of=1) == stored


def test_unknown_state_is_refused() -> None:
    raw = {k: v for k, v in record().to_hash().items()}
    raw["state"] = "paused"
    with pytest.raises(ValueError, match="paused"):
        JobRecord.from_hash(raw)
