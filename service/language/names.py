"""Names and order: every name valid and used once, labels unique in the draws, nodes in dependency order."""

from __future__ import annotations

import re

from service.exceptions import Problem
from service.language import expr
from service.language.sections import DefineDraft, Draft, Sections

RESERVED = frozenset({"chain", "draw"})
"""ArviZ's own dimension names."""
SAMPLE_STATS = ("diverging", "n_steps", "tree_depth", "step_size", "energy", "lp", "acceptance_rate")
"""The sample stats stored with every draw (workers/program.py STAT_NAMES). ArviZ gives a variable and a stat of
one name the same dims, so a variable named `lp` crashed result assembly: such names are refused."""
COORD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_:]{0,127}$")
"""Dimension names; `:` allowed for nested factors (`region:hospital`)."""


def check(sections: Sections, problems: list[Problem]) -> None:
    """Names of data, params and defines; the names they take in the draws; coordinate names."""
    coords = sections.coords
    seen: dict[str, str] = {}
    entries = ([(n, "data") for n in sections.data] + [(p.name, "params") for p in sections.params]
               + [(d.name, "define") for d in sections.defines] + [(f, "factor") for f in sections.factors])
    for name, section in entries:
        path = f"{section}.{name}"
        if not expr.NAME_RE.match(name):
            problems.append(Problem(path, "names use letters, digits and underscores and start with a letter "
                                          "(at most 64)"))
        elif name in RESERVED or (section != "data" and name in coords):
            problems.append(Problem(path, f"name {name!r} is reserved for a dimension"))
        if name in seen:
            problems.append(Problem(path, f"name {name!r} is already used in {seen[name]}"))
        seen.setdefault(name, section)
    outputs: dict[str, str] = {}  # names in the draws: labels where given
    for draft in sections.drafts:
        out = draft.label or draft.name
        if out in SAMPLE_STATS:
            problems.append(Problem(f"{draft.path}.label" if draft.label else draft.path,
                                    f"{out!r} names a sample stat in the results; choose another name"))
        elif draft.label and (out in RESERVED or out in coords):
            problems.append(Problem(f"{draft.path}.label", f"label {out!r} is reserved for a dimension"))
        elif out in outputs:
            problems.append(Problem(f"{draft.path}.label" if draft.label else draft.path,
                                    f"{out!r} already names {outputs[out]} in the draws"))
        outputs.setdefault(out, draft.path)
    for name in coords:
        if name in RESERVED or not COORD_RE.match(name):
            problems.append(Problem(f"coords.{name}", "not a valid dimension name (chain and draw are ArviZ's own)"))


def order(drafts: list[Draft], problems: list[Problem]) -> list[Draft]:
    """Dependency order (stable: declaration order where free). Nodes on or after a cycle are left out; each
    cycle is a problem at its first node."""
    nodes = {n.name: n for n in drafts}
    deps = {name: dependencies(node) & nodes.keys() for name, node in nodes.items()}
    ordered: list[Draft] = []
    done: set[str] = set()
    while len(done) < len(nodes):
        ready = [n for n in nodes if n not in done and deps[n] <= done]
        if not ready:
            break
        ordered.append(nodes[ready[0]])
        done.add(ready[0])
    for cycle in _cycles({n: deps[n] for n in nodes if n not in done}):
        problems.append(Problem(nodes[cycle[0]].path, "cycle: " + " -> ".join([*cycle, cycle[0]])))
    return ordered


def dependencies(draft: Draft) -> set[str]:
    """Every name a draft's expression or distribution arguments mention."""
    if isinstance(draft, DefineDraft):
        return expr.names(draft.node) if draft.node is not None else set()
    if draft.dist is None:
        return set()
    out: set[str] = set()
    pending = [draft.dist]
    while pending:
        dist = pending.pop()
        for node in dist.args.values():
            out |= expr.names(node)
        pending += dist.nested.values()
    return out


def _cycles(deps: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly tangled group of the remaining nodes, for the message."""
    found: list[list[str]] = []
    covered: set[str] = set()
    for start in deps:
        if start in covered:
            continue
        path = [start]
        seen = {start: 0}
        node = start
        while True:
            nxt = next((d for d in sorted(deps[node]) if d in deps), None)
            if nxt is None:
                break
            if nxt in seen:
                cycle = path[seen[nxt]:]
                if not covered & set(cycle):
                    found.append(cycle)
                covered |= set(path)
                break
            seen[nxt] = len(path)
            path.append(nxt)
            node = nxt
        covered |= set(path)
    return found
