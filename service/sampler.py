"""Sampler settings (design 2.3) and job documents `{model, sampler}`."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.exceptions import Problem, SpecError
from service.language.ir import Model
from service.language.validate import validate

MAX_CHAINS = 64
MAX_ITERATIONS = 200_000


class Role(Enum):
    """What a sampler setting changes, declared once on the field (`Annotated[..., Role.X]`) and read by
    `SamplerSettings.fields(role)`: the engine's compiled-program cache key and the checkpoint fingerprint are
    derived from these marks, so a new setting cannot be forgotten in one of them."""

    COMPILED = "compiled"
    """Shapes the compiled block program (part of its cache key); also changes draws."""
    DRAWS = "draws"
    """Changes a chain's draws but not the compiled program."""
    JOB = "job"
    """Neither: how many chains, and the seed (which the fingerprint names on its own)."""


class SamplerSettings(BaseModel):
    """How to run NUTS. Out-of-range values are refused (a 422 over the API)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chains: Annotated[int, Role.JOB] = Field(4, ge=1, le=MAX_CHAINS, description="Independent chains.")
    warmup: Annotated[int, Role.COMPILED] = Field(1000, ge=0, le=MAX_ITERATIONS,
                                                  description="Adaptation iterations per chain (discarded).")
    draws: Annotated[int, Role.DRAWS] = Field(1000, ge=1, le=MAX_ITERATIONS, description="Sampling iterations per "
                                              "chain; every `thin`-th is kept, as in Stan.")
    thin: Annotated[int, Role.DRAWS] = Field(1, ge=1, le=1000)
    seed: Annotated[int | None, Role.JOB] = Field(None, ge=0, lt=2**32,
                                                  description="Chain c uses key fold_in(PRNGKey(seed), c).")
    target_accept: Annotated[float, Role.COMPILED] = Field(0.8, gt=0.0, lt=1.0)
    max_tree_depth: Annotated[int, Role.COMPILED] = Field(10, ge=1, le=15)
    dense_mass: Annotated[bool, Role.COMPILED] = False
    init: Annotated[Literal["uniform", "median", "sample", "feasible"], Role.COMPILED] = Field(
        "uniform", description="numpyro init strategy; `uniform` (numpyro's default) draws in (-2, 2) unconstrained.")
    keep: Annotated[list[str] | None, Role.COMPILED] = Field(
        None, description="Variables to store; default all params and defines.")

    @classmethod
    def fields(cls, *roles: Role) -> tuple[str, ...]:
        """Names of the settings marked with any of `roles`, in declaration order."""
        return tuple(name for name, info in cls.model_fields.items() if any(r in info.metadata for r in roles))

    def values(self, *roles: Role) -> dict[str, Any]:
        """The settings marked with any of `roles` (lists as tuples, so the result can key a cache)."""
        return {name: tuple(v) if isinstance(v := getattr(self, name), list) else v for name in self.fields(*roles)}


def parse_settings(raw: Any, *, path: str = "sampler") -> SamplerSettings:
    if raw is None:
        raw = {}
    try:
        return SamplerSettings.model_validate(raw)
    except ValidationError as exc:
        problems = [
            Problem(".".join([path, *(str(p) for p in err["loc"])]), err["msg"]) for err in exc.errors()
        ]
        raise SpecError(problems) from None


def parse_job(doc: Any) -> tuple[Model, SamplerSettings]:
    """A job document `{model, sampler}` or a bare model spec (then default settings)."""
    if isinstance(doc, dict) and "model" in doc and "spec" not in doc:
        extra = sorted(set(doc) - {"model", "sampler", "name", "labels"})
        problems = [Problem(k, "unknown field of a job; expected model, sampler, name, labels") for k in extra]
        model = settings = None
        try:
            model = validate(doc["model"])
        except SpecError as exc:
            problems += [Problem(f"model.{p.path}".rstrip("."), p.message) for p in exc.problems]
        try:
            settings = parse_settings(doc.get("sampler"))
        except SpecError as exc:
            problems += exc.problems
        if problems:
            raise SpecError(problems)
        assert model is not None and settings is not None
    else:
        model, settings = validate(doc), SamplerSettings()
    check_keep(model, settings)
    return model, settings


def check_keep(model: Model, settings: SamplerSettings) -> None:
    unknown = [k for k in settings.keep or [] if k not in model.variables]
    if unknown:
        raise SpecError([Problem("sampler.keep", f"unknown variable(s) {', '.join(unknown)}; "
                                                 f"known: {', '.join(model.variables)}")])
