"""The alert rules: promtool checks them and runs their unit tests (each alert firing and not firing)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE.parents[1] / "helm" / "chainyard" / "rules" / "chainyard.rules.yaml"
ALERTS = {"ChainyardJobRhatHigh", "ChainyardJobDivergences", "ChainyardQueueBacklogGrowing", "ChainyardNoWorker",
          "ChainyardPriorRefitFailing", "ChainyardMetricsAbsent"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: apt-get install prometheus (CI installs it)"
    return subprocess.run([binary, *args], capture_output=True, text=True, cwd=HERE, timeout=120)


def test_rules_file_is_valid() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    rules = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert rules == ALERTS
    cases = yaml.safe_load((HERE / "rules_test.yaml").read_text())["tests"]
    checks = [c for case in cases for c in case["alert_rule_test"]]
    for alert in ALERTS:
        assert any(c["alertname"] == alert and c["exp_alerts"] for c in checks), f"{alert} never fires"
        assert any(c["alertname"] == alert and not c["exp_alerts"] for c in checks), f"{alert} never stays quiet"


def test_alert_unit_tests_pass() -> None:
    result = promtool("test", "rules", "rules_test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_rule_makes_the_unit_tests_fail(tmp_path: Path) -> None:
    """The unit tests are sensitive: R-hat's threshold moved to 1.5 is caught."""
    broken = tmp_path / "chainyard.rules.yaml"
    broken.write_text(RULES.read_text().replace("chainyard_job_rhat_max) > 1.01", "chainyard_job_rhat_max) > 1.5"))
    spec = yaml.safe_load((HERE / "rules_test.yaml").read_text())
    spec["rule_files"] = [str(broken)]
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(spec))
    result = promtool("test", "rules", str(tmp_path / "tests.yaml"))
    assert result.returncode != 0 and "ChainyardJobRhatHigh" in result.stdout + result.stderr
