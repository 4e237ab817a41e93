"""Every exception chainyard raises on purpose, in one place (rq's `exceptions.py` style)."""

from __future__ import annotations

from dataclasses import dataclass


class ChainyardError(Exception):
    """Base of all chainyard errors."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a user's input: the field path and what is wrong there."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(ChainyardError):
    """A model spec or sampler settings that cannot run; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


class CheckpointMismatchError(ChainyardError):
    """A checkpoint directory holds the state of a different job or engine layout."""


class InitializationError(ChainyardError):
    """NUTS found no starting point with a finite log density."""


class StopRequested(ChainyardError):  # noqa: N818 - it is a signal, not a failure
    """Sampling stopped at a block boundary because a stop was requested (cancel, SIGTERM)."""


class NotFoundError(ChainyardError):
    """No such job (or it belongs to another tenant: the same answer, so ids leak nothing)."""


class ConflictError(ChainyardError):
    """The request does not fit the resource's state (e.g. a summary of a running job)."""


class AuthError(ChainyardError):
    """Missing or unknown bearer token."""


class QuotaExceededError(ChainyardError):
    """A tenant is over one of its quotas (queued chains, submissions per minute): a 429."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Seconds after which the same request may succeed."""


class BackendError(ChainyardError):
    """The place a schedule runs (service.priors.backends: a Kubernetes CronJob) refused or could not be
    reached: `status` is the API's answer (503 unreachable or forbidden, 409 conflict, 422 refused)."""

    def __init__(self, message: str, *, status: int = 503) -> None:
        super().__init__(message)
        self.status = status
