"""Model spec -> validated Model. Collects every problem, each with its field path.

The stages, each a module: text.py refuses any string UTF-8 cannot encode, keys
included, before anything quotes it; sections.py reads the sections into drafts
(data through data.py); names.py checks names and orders the nodes by dependency
(cycles are problems); resolve.py resolves every shape and builds the Model,
checking constraints and supports against the data on the way (support.py);
fitted.py reads the fitted priors and checks them against the Model's params. A
formula spec is compiled to a graph spec first (formula.py). Nothing here
imports JAX; the API runs this before queueing anything. What the model costs
in memory (cost.py) is checked with the sampler settings, by
service.sampler.parse_job, against the server's limits.

The limits live with the stage that enforces them and are importable from here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from service.exceptions import Problem, SpecError
from service.language import fitted, names, text
from service.language.data import MAX_DATA_DIMS, MAX_DATA_ELEMENTS, MAX_ROWS
from service.language.formula import compile_formula
from service.language.ir import Model
from service.language.names import COORD_RE
from service.language.resolve import MAX_PARAM_ELEMENTS, resolve
from service.language.sections import LABEL_RE, MAX_NAMES, about, read

__all__ = ["COORD_RE", "LABEL_RE", "MAX_DATA_DIMS", "MAX_DATA_ELEMENTS", "MAX_NAMES", "MAX_PARAM_ELEMENTS",
           "MAX_ROWS", "SPEC_VERSION", "validate"]

SPEC_VERSION = 1


def validate(doc: Any) -> Model:
    """Validate a model spec (graph or formula front end; already parsed from YAML/JSON)."""
    if not isinstance(doc, Mapping):
        raise SpecError([Problem("", f"a model spec is a mapping with `spec: {SPEC_VERSION}`, "
                                     f"got {type(doc).__name__}")])
    unencodable = text.unencodable(doc)
    if unencodable:  # before anything quotes the user's strings back
        raise SpecError(unencodable)
    if "spec" not in doc:
        raise SpecError([Problem("spec", f"missing: add `spec: {SPEC_VERSION}` (the model language version)")])
    version = doc["spec"]
    if isinstance(version, bool) or version != SPEC_VERSION:
        raise SpecError([Problem("spec", f"unsupported version {version!r}; this server reads version "
                                         f"{SPEC_VERSION}")])
    if "formula" in doc:
        return _from_formula(doc)
    return _from_graph(doc)


def _from_graph(doc: Mapping[str, Any]) -> Model:
    problems: list[Problem] = []
    sections = read(doc, problems)
    names.check(sections, problems)
    ordered = names.order(sections.drafts, problems)
    model = resolve(sections, ordered, problems)
    priors = fitted.check(doc.get("fitted_priors"), model, problems)
    if problems:
        raise SpecError(problems)
    assert model is not None
    return dataclasses.replace(model, fitted=priors) if priors else model


def _from_formula(doc: Mapping[str, Any]) -> Model:
    """Compile a formula spec to a graph spec and validate that; problems point at the user's fields."""
    problems: list[Problem] = []
    about(doc, problems)  # the compiled graph spec has no name or description
    try:
        graph = compile_formula(doc)
    except SpecError as exc:
        raise SpecError(problems + exc.problems) from None
    if problems:
        raise SpecError(problems)
    try:
        model = _from_graph(graph)
    except SpecError as exc:
        labels = {f"params.{k}": f"priors.{v.get('label', k)}" for k, v in graph["params"].items()
                  if isinstance(v, Mapping)}
        raise SpecError([Problem(labels.get(".".join(p.path.split(".")[:2]), p.path), p.message)
                         for p in exc.problems]) from None
    return model
