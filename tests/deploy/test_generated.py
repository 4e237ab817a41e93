"""Files generated from the chart stay in sync with it: k8s/ (plain manifests) and the chart README's values table."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.deploy.chart import CHART, NAMESPACE, ROOT, render

TOOLS = ROOT / "tools" / "deploy"
_spec = importlib.util.spec_from_file_location("chart_readme", TOOLS / "chart_readme.py")
assert _spec and _spec.loader
chart_readme = sys.modules.setdefault("chart_readme", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(chart_readme)


def run_tool(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOLS / script), *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_k8s_manifests_equal_a_fresh_render() -> None:
    done = run_tool("render_k8s.py", "--check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_k8s_check_tells_a_stale_copy(tmp_path: Path) -> None:
    stale = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", stale)
    manifest = stale / "chainyard.yaml"
    manifest.write_text(manifest.read_text().replace("replicas: 2", "replicas: 3", 1))
    done = run_tool("render_k8s.py", "--check", "--k8s-dir", str(stale))
    assert done.returncode == 1
    assert "-  replicas: 3" in done.stdout and "+  replicas: 2" in done.stdout


def test_k8s_manifests_are_the_default_render_and_the_kustomization_applies_them() -> None:
    on_disk = [doc for doc in yaml.safe_load_all((ROOT / "k8s" / "chainyard.yaml").read_text()) if doc]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(on_disk, key=key) == sorted(render(), key=key)
    kustomization = yaml.safe_load((ROOT / "k8s" / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["namespace"] == NAMESPACE
    files = sorted(p.name for p in (ROOT / "k8s").iterdir() if p.name != "kustomization.yaml")
    assert kustomization["resources"] == files == ["chainyard.yaml"]


def test_every_values_key_is_commented_and_the_readme_table_is_current() -> None:
    assert chart_readme.undocumented((CHART / "values.yaml").read_text()) == []
    done = run_tool("chart_readme.py", "--check")
    assert done.returncode == 0, done.stdout + done.stderr
    readme = (CHART / "README.md").read_text()
    for key in chart_readme.keys((CHART / "values.yaml").read_text()):
        if key.description is not None:
            assert f"| `{key.path}` |" in readme


def test_undocumented_values_are_caught() -> None:
    text = """\
## a section
api:
  # -- documented
  port: 8000
  timeout: 5
  # a plain comment on a leaf is not a description
  host: x
  # -- a documented map covers its children
  resources:
    limits: {cpu: 1}
nested:
  deeper: {}
"""
    assert chart_readme.undocumented(text) == [
        "api.timeout: no comment",
        "api.host: a value without a `# --` description",
        "nested: no comment",
        "nested.deeper: no comment",
    ]
