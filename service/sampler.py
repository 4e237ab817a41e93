"""Sampler settings (design 2.3) and job documents `{model, sampler}`."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from service.exceptions import Problem, SpecError
from service.language import cost, text
from service.language.cost import Limits
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
    LENGTH = "length"
    """How long the chains run, not their draws: a chain asked for more draws (`draws`, `until`, an extension)
    continues the same sequence, so its checkpoints stay valid (not in the fingerprint)."""
    JOB = "job"
    """Neither: how many chains, and the seed (which the fingerprint names on its own)."""


class Until(BaseModel):
    """Sample in rounds until the draws pass these targets (design 2.3): a decision after every `check_every`
    draws per chain, taken from exactly the draws so far (ArviZ rank-normalized R-hat, bulk and tail ESS
    over every stored element), never from timing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rhat: float = Field(1.01, gt=1.0, le=2.0, description="Stop once max R-hat is below this.")
    ess_bulk: float = Field(400, ge=0, le=10_000_000, description="... and min bulk ESS is at least this.")
    ess_tail: float = Field(400, ge=0, le=10_000_000, description="... and min tail ESS is at least this.")
    max_draws: int = Field(20_000, ge=1, le=MAX_ITERATIONS, description="Draws per chain at most (iterations "
                           "after warmup, as `draws`).")
    check_every: int = Field(500, ge=1, le=MAX_ITERATIONS, description="Draws per chain between decisions.")


class WarmStart(BaseModel):
    """Start each chain from an earlier job's final position, step size and inverse mass matrix."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job: str = Field(pattern=r"^j[0-9a-f]{24}$", description="A finished job of the same tenant, with the same "
                     "model structure and shapes.")


class SamplerSettings(BaseModel):
    """How to run NUTS. Out-of-range values are refused (a 422 over the API)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chains: Annotated[int, Role.JOB] = Field(4, ge=1, le=MAX_CHAINS, description="Independent chains.")
    warmup: Annotated[int, Role.COMPILED] = Field(1000, ge=0, le=MAX_ITERATIONS,
                                                  description="Adaptation iterations per chain (discarded).")
    draws: Annotated[int, Role.LENGTH] = Field(1000, ge=1, le=MAX_ITERATIONS, description="Sampling iterations "
                                               "per chain (the minimum with `until`); every `thin`-th is kept, as "
                                               "in Stan.")
    thin: Annotated[int, Role.DRAWS] = Field(1, ge=1, le=1000)
    seed: Annotated[int | None, Role.JOB] = Field(None, ge=0, lt=2**32,
                                                  description="Chain c uses key fold_in(PRNGKey(seed), c).")
    target_accept: Annotated[float, Role.COMPILED] = Field(0.8, gt=0.0, lt=1.0)
    max_tree_depth: Annotated[int, Role.COMPILED] = Field(10, ge=1, le=15)
    dense_mass: Annotated[bool, Role.COMPILED] = False
    adaptation: Annotated[Literal["stan", "fisher"], Role.COMPILED] = Field(
        "fisher", description="Warmup adaptation of the step size and mass matrix: `fisher` (nutpie's: a diagonal "
        "sqrt(Var(positions) / Var(gradients)), re-estimated every draw, in short early windows then growing ones; "
        "about half the gradients of `stan` for the same ESS) or `stan` (numpyro's: variance of the positions in "
        "Stan's windows; the default with `dense_mass: true`, which `fisher` does not estimate).")
    init: Annotated[Literal["uniform", "median", "sample", "feasible"], Role.COMPILED] = Field(
        "uniform", description="numpyro init strategy; `uniform` (numpyro's default) draws in (-2, 2) unconstrained.")
    keep: Annotated[list[str] | None, Role.COMPILED] = Field(
        None, description="Variables to store; default all params and defines.")
    until: Annotated[Until | None, Role.LENGTH] = Field(
        None, description="Sample in rounds until R-hat and ESS pass (`true`: the defaults); `draws` is the minimum.")
    warm_start: Annotated[WarmStart | None, Role.DRAWS] = Field(
        None, description="Start from an earlier job's final state; `warmup` then continues its adaptation.")

    @field_validator("until", mode="before")
    @classmethod
    def _until_flag(cls, value: Any) -> Any:
        if value is True:
            return {}
        if value is False:
            return None
        return value

    @model_validator(mode="before")
    @classmethod
    def _dense_adapts_as_stan(cls, data: Any) -> Any:
        """`dense_mass: true` without an adaptation gets `stan`, the one that estimates a dense matrix."""
        if isinstance(data, dict) and data.get("dense_mass") is True and data.get("adaptation") is None:
            return {**data, "adaptation": "stan"}
        return data

    @field_validator("adaptation")
    @classmethod
    def _adaptation_fits(cls, value: str, info: ValidationInfo) -> str:
        if value == "fisher" and info.data.get("dense_mass"):
            raise ValueError("fisher adaptation estimates a diagonal mass matrix only; use dense_mass: false or "
                             "adaptation: stan")
        return value

    @model_validator(mode="after")
    def _until_fits(self) -> SamplerSettings:
        if self.until is not None and self.until.max_draws < self.draws:
            raise ValueError(f"until.max_draws ({self.until.max_draws}) is below draws ({self.draws}), the minimum")
        return self

    def kept(self, draws: int) -> int:
        """Kept draws among the first `draws` sampling iterations: every `thin`-th, the first included."""
        return cost.kept_draws(draws, self.thin)

    @property
    def most_draws(self) -> int:
        """Draws per chain the job may run to: `until.max_draws`, else `draws`."""
        return self.until.max_draws if self.until is not None else self.draws

    @classmethod
    def fields(cls, *roles: Role) -> tuple[str, ...]:
        """Names of the settings marked with any of `roles`, in declaration order."""
        return tuple(name for name, info in cls.model_fields.items() if any(r in info.metadata for r in roles))

    def values(self, *roles: Role) -> dict[str, Any]:
        """The settings marked with any of `roles` (lists as tuples, so the result can key a cache)."""
        return {name: _hashable(getattr(self, name)) for name in self.fields(*roles)}


def _hashable(value: Any) -> Any:
    """Lists as tuples, nested settings as sorted (name, value) tuples: a cache key and JSON alike."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, BaseModel):
        return tuple(sorted(value.model_dump().items()))
    return value


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


def parse_job(doc: Any, *, limits: Limits | None = None) -> tuple[Model, SamplerSettings]:
    """A job document `{model, sampler, name?, labels?}` or a bare model spec (then default settings), checked
    together: the variables in `keep` exist, and the model's memory per evaluation and the job's results are
    within `limits` (default: service.defaults'; the API passes its Settings')."""
    job = isinstance(doc, dict) and "model" in doc and "spec" not in doc
    if job:
        extra = sorted(set(doc) - {"model", "sampler", "name", "labels"})
        outside = {k: v for k, v in doc.items() if k != "model"}
        unencodable = text.unencodable(outside)
        if unencodable:  # before a message quotes them (a key, a keep entry)
            raise SpecError(unencodable)
        problems = [Problem(k, "unknown field of a job; expected model, sampler, name, labels") for k in extra]
        problems += _about_job(doc.get("name"), doc.get("labels"))
        model = settings = None
        try:
            model = validate(doc["model"])
        except SpecError as exc:
            problems += _in_model(exc.problems)
        try:
            settings = parse_settings(doc.get("sampler"))
        except SpecError as exc:
            problems += exc.problems
        if problems:
            raise SpecError(problems)
        assert model is not None and settings is not None
    else:
        model, settings = validate(doc), SamplerSettings()
    problems = keep_problems(model, settings)
    problems += check_cost(model, settings, limits or Limits(), in_job=job)
    if problems:
        raise SpecError(problems)
    return model, settings


def check_cost(model: Model, settings: SamplerSettings, limits: Limits, *, in_job: bool = True) -> list[Problem]:
    """Memory per evaluation and size of results over `limits` (service/language/cost.py); model paths as in a
    job document (`model.define.c`) unless `in_job` is false; results at the most draws the job may run to
    (`until.max_draws`, else `draws`). Call it again whenever settings change after parse_job (CLI overrides,
    extending a job's draws)."""
    found = cost.check(model, chains=settings.chains, draws=settings.most_draws, thin=settings.thin, keep=settings.keep,
                       limits=limits, dense_mass=settings.dense_mass)
    return [p if p.path.startswith("sampler") or not in_job else _in_model([p])[0] for p in found]


def keep_problems(model: Model, settings: SamplerSettings) -> list[Problem]:
    unknown = [k for k in settings.keep or [] if k not in model.variables]
    if unknown:
        return [Problem("sampler.keep", f"unknown variable(s) {', '.join(unknown)}; known: "
                                        f"{', '.join(model.variables)}")]
    return []


MAX_JOB_NAME_CHARS = 200
"""As the API's JobCreate.name."""
MAX_LABEL_CHARS = 200


def _about_job(name: Any, labels: Any) -> list[Problem]:
    """A job's `name` and `labels` (they reach metrics, logs and responses): no control characters."""
    problems: list[Problem] = []
    if name is not None:
        if not isinstance(name, str):
            problems.append(Problem("name", "must be a string"))
        elif (problem := text.label_problem(name, max_chars=MAX_JOB_NAME_CHARS)) is not None:
            problems.append(Problem("name", problem))
    if labels is not None:
        if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in labels.items()):
            problems.append(Problem("labels", "must map strings to strings"))
            return problems
        for key, value in labels.items():
            for what, item in (("name", key), ("value", value)):
                if (problem := text.label_problem(item, max_chars=MAX_LABEL_CHARS)) is not None:
                    problems.append(Problem(f"labels.{key}", f"the label {what} {problem}"))
    return problems


def _in_model(problems: list[Problem]) -> list[Problem]:
    return [Problem(f"model.{p.path}".rstrip("."), p.message) for p in problems]
