"""Screenshot of Prometheus' graph of chainyard_job_rhat_max during a run, for the docs:
`.venv/bin/python tools/screenshot.py docs/img/prometheus-rhat.png`.

Starts a local stack with Debian's prometheus (scraping every second), runs the centered eight schools
(hard: R-hat starts far above 1.01) next to an easy normal-mean job, and while they run points Debian's
headless Chromium at the graph page.
"""

from __future__ import annotations

import copy
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import yaml

from cli.stack import Stack, free_port
from service.client import Client

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--hide-scrollbars", "--window-size=1400,900",
                  "--virtual-time-budget=15000"]


def main(out: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        token = secrets.token_urlsafe(16)
        stack = Stack(data_dir=Path(tmp), port=free_port(), workers=2, token=token,
                      prometheus_port=free_port(), scrape_interval="1s",
                      overrides={"diagnostics_interval": 0.5, "diagnostics_cpu_share": 1, "max_block": 50,
                                 "block_seconds": 0.05})
        stack.start()
        try:
            client = Client(stack.url, token)
            hard = copy.deepcopy(yaml.safe_load((ROOT / "examples" / "eight_schools.yaml").read_text()))
            hard["params"]["theta"] = {"dist": "Normal(mu, tau)", "dims": ["school"]}
            hard["name"] = "eight_schools_centered"
            easy = copy.deepcopy(yaml.safe_load((ROOT / "examples" / "eight_schools.yaml").read_text()))
            easy["name"] = "eight_schools"
            started = time.time()
            jobs = [client.submit({"model": hard, "sampler": {"chains": 2, "warmup": 30, "draws": 40000, "seed": 7}}),
                    client.submit({"model": easy, "sampler": {"chains": 2, "warmup": 500, "draws": 40000, "seed": 7}})]
            while time.time() - started < 45 and any(client.get(j["id"])["state"] in ("queued", "running")
                                                     for j in jobs):
                time.sleep(1)
            query = urlencode({"g0.expr": "max by (job, model) (chainyard_job_rhat_max)", "g0.tab": "0",
                               "g0.range_input": f"{int(time.time() - started) + 5}s", "g0.stacked": "0",
                               "g0.show_exemplars": "0"})
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([chromium, *CHROMIUM_FLAGS, f"--screenshot={out.resolve()}",
                            f"{stack.prometheus_url}/graph?{query}"], check=True, capture_output=True, timeout=120)
            sys.stdout.write(f"wrote {out}\n")
        finally:
            stack.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "img" / "prometheus-rhat.png")
