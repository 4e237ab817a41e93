"""The `chainyard` command (cli/app.py): every verb is listed, and only the sampling verbs import JAX."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from cli.app import GROUPS, VERBS

EVERY_VERB = ["run", "validate", "submit", "status", "watch", "summary", "draws", "extend", "cancel", "list", "worker",
              "api", "refit", "up"]
EVERY_GROUP = ["dataset", "prior"]


def test_help_lists_every_verb_in_order() -> None:
    script = Path(sys.executable).parent / "chainyard"  # the console script pyproject installs
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60,
                          env={"COLUMNS": "120", "PATH": str(script.parent)})
    assert done.returncode == 0, done.stderr
    panel = done.stdout.split("Commands")[1]
    assert re.findall(r"^│ (\w+) ", panel, re.MULTILINE) == EVERY_VERB + EVERY_GROUP
    assert [name for name, _ in VERBS] == EVERY_VERB
    assert [name for name, _ in GROUPS] == EVERY_GROUP


def test_building_the_app_imports_neither_jax_nor_numpyro() -> None:
    code = ("import sys; from cli.app import create_app; create_app(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'numpyro', 'arviz')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
