"""The repository's tools/ scripts, loaded as modules for the tests (tools/ is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "helm" / "chainyard" / "dashboards" / "chainyard.json"


def load(path: Path, name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


builder = load(ROOT / "tools" / "dashboard.py", "chainyard_dashboard_builder")
grafana = load(ROOT / "tools" / "grafana-schema" / "validate.py", "chainyard_grafana_schema")
