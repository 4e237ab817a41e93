"""/v1/priors/elicit: a distribution fitted to an expert's quantiles and interval masses (no Redis)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from service.api.deps import Tenant
from service.api.jobs import ERRORS
from service.priors.elicit import FAMILIES, elicit

router = APIRouter(prefix="/v1/priors", tags=["priors"], responses=ERRORS)


class IntervalJudgement(BaseModel):
    """P(low < X < high) = mass."""

    model_config = ConfigDict(extra="forbid")

    low: float
    high: float
    mass: float = Field(description="Probability strictly between 0 and 1.")


class ElicitRequest(BaseModel):
    """POST /v1/priors/elicit: a family (or auto) and expert judgements."""

    model_config = ConfigDict(extra="forbid")

    family: str = Field("auto", description=f"auto, or one of {', '.join(FAMILIES)}.")
    quantiles: dict[str, float] | None = Field(
        None, description="Probability -> value: P(X <= value) = probability, e.g. {\"0.05\": 0.5, \"0.5\": 0.7}.")
    intervals: list[IntervalJudgement] | None = Field(None, description="Masses in intervals.", max_length=100)
    df: float | None = Field(None, description="StudentT's degrees of freedom, fixed (fitted when absent).")
    lower: float | None = Field(None, description="The quantity cannot be below this (0: positive).")
    upper: float | None = Field(None, description="The quantity cannot be above this (1 with lower 0: a proportion).")


class FamilyFitPublic(BaseModel):
    """One family fitted to the judgements (service.priors.elicit.FamilyFit)."""

    model_config = ConfigDict(title="FamilyFit")

    family: str
    params: dict[str, float] = Field(description="numpyro's parameter names -> value, full precision.")
    error: float = Field(description="Sum of squared CDF errors over the judgements (SHELF's fitdist).")
    spec: str = Field(description="The distribution in the model language, 4 significant digits.")
    support: Literal["real", "positive", "unit"]


class ElicitResponse(BaseModel):
    fits: list[FamilyFitPublic] = Field(description="Every family fitted, best first.")
    best: FamilyFitPublic


@router.post("/elicit", response_model=ElicitResponse)
def elicit_prior(body: ElicitRequest, tenant: Tenant) -> dict[str, Any]:
    result = elicit(body.model_dump(exclude_none=True))
    return {"fits": [asdict(fit) for fit in result.fits], "best": asdict(result.best)}
