"""The Grafana schema check itself (tools/grafana-schema): real-world exports pass, broken variants fail."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.observability.tooling import ROOT, grafana

HERE = ROOT / "tools" / "grafana-schema"
validate_dashboard = grafana.validate_dashboard

EXPORTED = json.loads((HERE / "testdata" / "exported_dashboard.json").read_text())
EXTERNAL = json.loads((HERE / "testdata" / "external_export_dashboard.json").read_text())


def mutated(doc: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    change(doc)
    return doc


def timeseries(d: dict[str, Any]) -> dict[str, Any]:
    panel: dict[str, Any] = d["panels"][1]
    return panel


def query_var(d: dict[str, Any]) -> dict[str, Any]:
    variable: dict[str, Any] = d["templating"]["list"][1]
    return variable


@pytest.mark.parametrize("name", ["exported_dashboard.json", "external_export_dashboard.json"])
def test_real_world_exports_are_valid(name: str) -> None:
    doc = json.loads((HERE / "testdata" / name).read_text())
    assert validate_dashboard(doc) == []


def test_minimal_dashboard_is_valid() -> None:
    assert validate_dashboard({"schemaVersion": 39}) == []


BROKEN: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "gridPos.w is a string": (lambda d: timeseries(d)["gridPos"].update(w="16"), "/panels/1/gridPos/w"),
    "gridPos misses h": (lambda d: timeseries(d)["gridPos"].pop("h"), "/panels/1/gridPos"),
    "panels is not an array": (lambda d: d.update(panels={"a": EXPORTED["panels"][1]}), "/panels"),
    "panel misses type": (lambda d: timeseries(d).pop("type"), "/panels/1"),
    "panel has a misspelt key": (lambda d: timeseries(d).update(gridpos={"h": 1}), "/panels/1"),
    "targets is not an array": (lambda d: timeseries(d).update(targets={"refId": "A"}), "/panels/1/targets"),
    "variable type is unknown": (lambda d: query_var(d).update(type="prometheus"), "/templating/list/1/type"),
    "variable misses name": (lambda d: query_var(d).pop("name"), "/templating/list/1"),
    "variable hide is out of enum": (lambda d: query_var(d).update(hide=7), "/templating/list/1/hide"),
    "templating.list is not an array": (lambda d: d["templating"].update(list={}), "/templating/list"),
    "thresholds mode is invalid": (
        lambda d: timeseries(d)["fieldConfig"]["defaults"]["thresholds"].update(mode="relative"),
        "/panels/1/fieldConfig/defaults/thresholds/mode",
    ),
    "threshold step misses color": (
        lambda d: timeseries(d)["fieldConfig"]["defaults"]["thresholds"]["steps"][1].pop("color"),
        "/panels/1/fieldConfig/defaults/thresholds/steps/1",
    ),
    "threshold value is a string": (
        lambda d: timeseries(d)["fieldConfig"]["defaults"]["thresholds"]["steps"][1].update(value="80"),
        "/panels/1/fieldConfig/defaults/thresholds/steps/1/value",
    ),
    "color mode is invalid": (
        lambda d: timeseries(d)["fieldConfig"]["defaults"]["color"].update(mode="rainbow"),
        "/panels/1/fieldConfig/defaults/color/mode",
    ),
    "fieldConfig misses overrides": (lambda d: timeseries(d)["fieldConfig"].pop("overrides"), "/panels/1/fieldConfig"),
    "row panel misses collapsed": (lambda d: d["panels"][0].pop("collapsed"), "/panels/0"),
    "schemaVersion missing": (lambda d: d.pop("schemaVersion"), "/"),
    "schemaVersion is a string": (lambda d: d.update(schemaVersion="39"), "/schemaVersion"),
    "unknown top-level key": (lambda d: d.update(pannels=[]), "/"),
    "graphTooltip out of enum": (lambda d: d.update(graphTooltip=3), "/graphTooltip"),
    "time misses to": (lambda d: d["time"].pop("to"), "/time"),
    "annotation misses iconColor": (lambda d: d["annotations"]["list"][0].pop("iconColor"), "/annotations/list/0"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_variants_are_rejected(case: str) -> None:
    change, where = BROKEN[case]
    errors = validate_dashboard(mutated(EXPORTED, change))
    assert errors, f"{case}: accepted"
    assert any(e.startswith(where) for e in errors), errors


# What the schema leaves open (documented in README.md): these pass although Grafana
# would reject or misrender them. A failing test here means the schema got stricter.
KNOWN_GAPS: dict[str, Callable[[dict[str, Any]], None]] = {
    "gridPos.w beyond 24 columns": lambda d: timeseries(d)["gridPos"].update(w=100),
    "negative / fractional gridPos": lambda d: timeseries(d)["gridPos"].update(x=-1.5),
    "unknown panel plugin type": lambda d: timeseries(d).update(type="no-such-panel"),
    "panel options are free-form": lambda d: timeseries(d)["options"]["legend"].update(displayMode=42),
    "targets are free-form (no refId)": lambda d: timeseries(d)["targets"][0].pop("refId"),
    "fieldConfig.defaults.custom is free-form": lambda d: timeseries(d)["fieldConfig"]["defaults"]["custom"].update(
        drawStyle=1
    ),
    "variables accept unknown keys": lambda d: query_var(d).update(definitoin="typo"),
    "duplicate panel ids": lambda d: timeseries(d).update(id=3),
    "any schemaVersion number": lambda d: d.update(schemaVersion=1),
}


@pytest.mark.parametrize("case", sorted(KNOWN_GAPS))
def test_known_gaps_are_accepted(case: str) -> None:
    assert validate_dashboard(mutated(EXPORTED, KNOWN_GAPS[case])) == []


def test_cli_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(mutated(EXPORTED, lambda d: d.update(panels={}))))
    good = HERE / "testdata" / "exported_dashboard.json"

    def run(*files: Path) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, str(HERE / "validate.py"), *map(str, files)]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)

    assert run(good).returncode == 0
    res = run(good, bad)
    assert res.returncode == 1 and "bad.json: /panels:" in res.stdout
    assert run(tmp_path / "missing.json").returncode == 2
