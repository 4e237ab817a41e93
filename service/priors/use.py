"""`priors_from` in a job's model spec, resolved at submit into the spec's `fitted_priors` section.

    priors_from: "hospitals@latest"                                   # exported names = the job's param names
    priors_from: {prior: "hospitals@3", params: {mu: mu_h, tau: tau_h}}  # exported name -> the job's param
    priors_from: [ ..., ... ]                                           # several priors

The named version is read once, here; the job pins it (`JobRecord.priors`) and carries the fitted numbers in
its pinned model, so it stays reproducible after `latest` moves. Mapping only some of an mvn prior's
variables uses their joint marginal (the sub-vector's mean and covariance), which is exact for a normal.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from service.exceptions import NotFoundError, Problem, SpecError
from service.language.fitted import declared_support
from service.language.ir import Model, Param
from service.language.validate import validate
from service.priors.refs import PriorPin

REF_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]{0,63})@(latest|[1-9][0-9]{0,8})$")
MAX_PRIORS_FROM = 8

ReadVersion = Callable[[str, int | None], tuple[int, dict[str, Any]]]
"""(prior name, version or None for latest) -> (version number, the version); NotFoundError if none."""


def resolve(model: Mapping[str, Any], read: ReadVersion) -> tuple[dict[str, Any], tuple[PriorPin, ...]]:
    """The spec with `priors_from` replaced by `fitted_priors` entries, and the pins. Problems (paths relative
    to the spec) raise SpecError, all at once."""
    raw = model.get("priors_from")
    doc = {k: v for k, v in model.items() if k != "priors_from"}
    if raw is None:
        return doc, ()
    entries = raw if isinstance(raw, list) else [raw]
    if len(entries) > MAX_PRIORS_FROM:
        raise SpecError([Problem("priors_from", f"at most {MAX_PRIORS_FROM} priors")])
    validated = validate(doc)
    problems: list[Problem] = []
    fitted: list[dict[str, Any]] = list(doc.get("fitted_priors") or [])
    pins: list[PriorPin] = []
    taken: set[str] = set()
    for i, entry in enumerate(entries):
        path = "priors_from" if not isinstance(raw, list) else f"priors_from[{i}]"
        result = _one(entry, path, validated, read, taken, problems)
        if result is not None:
            fitted.append(result[0])
            pins.append(result[1])
    if problems:
        raise SpecError(problems)
    return {**doc, "fitted_priors": fitted}, tuple(pins)


def _one(entry: Any, path: str, model: Model, read: ReadVersion, taken: set[str],
         problems: list[Problem]) -> tuple[dict[str, Any], PriorPin] | None:
    if isinstance(entry, str):
        ref, mapping, ref_path = entry, None, path
    elif isinstance(entry, Mapping) and set(entry) <= {"prior", "params"} and "prior" in entry:
        ref, mapping, ref_path = entry["prior"], entry.get("params"), f"{path}.prior"
        if mapping is not None and not (isinstance(mapping, Mapping) and mapping
                                        and all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())):
            problems.append(Problem(f"{path}.params", "maps exported names to this model's params (strings)"))
            return None
    else:
        problems.append(Problem(path, "a reference `name@latest` / `name@N`, or {prior, params}"))
        return None
    match = REF_RE.match(ref) if isinstance(ref, str) else None
    if match is None:
        problems.append(Problem(ref_path, f"{ref!r} is not `name@latest` or `name@N` (N >= 1)"))
        return None
    name, which = match.group(1), match.group(2)
    try:
        number, version = read(name, None if which == "latest" else int(which))
    except NotFoundError as exc:
        problems.append(Problem(ref_path, str(exc)))
        return None
    export = version["export"]
    members = {m["name"]: m for m in export["members"]}
    mapping = dict(mapping) if mapping is not None else {m: m for m in members}
    params = {**{p.name: p for p in model.params}, **{p.output: p for p in model.params}}
    chosen: list[tuple[str, Param]] = []
    for exported, target in mapping.items():
        where = f"{path}.params.{exported}" if isinstance(entry, Mapping) else path
        if exported not in members:
            problems.append(Problem(where, f"{name}@{number} exports {', '.join(members)}, not {exported}"))
            continue
        param = params.get(target)
        if param is None:
            problems.append(Problem(where, f"{target} is not a param of this model"))
            continue
        if param.name in taken:
            problems.append(Problem(where, f"{target} already gets a prior from priors_from"))
            continue
        member = members[exported]
        if list(param.shape) != list(member["shape"]):
            problems.append(Problem(where, f"{name}@{number} exports {exported} with shape {member['shape']}; "
                                           f"{target} has shape {list(param.shape)}"))
            continue
        support = declared_support(param, model.data)
        if support != member["support"]:
            problems.append(Problem(where, f"{exported} has support {member['support']} in {name}@{number}; "
                                           f"{target} declares {param.dist.name} ({support or 'not replaceable'})"))
            continue
        taken.add(param.name)
        chosen.append((exported, param))
    if len(chosen) != len(mapping):
        return None
    order = [m["name"] for m in export["members"] if m["name"] in dict(chosen)]
    by_name = dict(chosen)
    section: dict[str, Any] = {
        "source": f"{name}@{number}", "method": export["method"],
        "members": [{"param": by_name[e].name, "shape": members[e]["shape"], "support": members[e]["support"]}
                    for e in order]}
    if export["method"] == "mvn":
        section["components"] = _sub_components(export, [m["name"] for m in export["members"]], order)
    else:
        index = {m["name"]: i for i, m in enumerate(export["members"])}
        section["marginals"] = [export["marginals"][index[e]] for e in order]
    pin = PriorPin(prior=name, version=number, params={e: by_name[e].output for e in order}, method=export["method"])
    return section, pin


def _sub_components(export: dict[str, Any], names: list[str], chosen: list[str]) -> list[dict[str, Any]]:
    """The mvn components restricted to `chosen` members (a normal's marginal: sub-mean, sub-covariance)."""
    sizes = [int(np.prod(m["shape"], dtype=int)) for m in export["members"]]
    starts = np.cumsum([0, *sizes])
    index = np.concatenate([np.arange(starts[names.index(c)], starts[names.index(c) + 1]) for c in chosen])
    if len(index) == starts[-1] and np.array_equal(index, np.arange(starts[-1])):
        return list(export["components"])
    out = []
    for comp in export["components"]:
        loc = np.asarray(comp["loc"])[index]
        tril = np.asarray(comp["scale_tril"])
        cov = (tril @ tril.T)[np.ix_(index, index)]
        out.append({"weight": comp["weight"], "loc": loc.tolist(), "scale_tril": np.linalg.cholesky(cov).tolist()})
    return out
