"""`python -m workers --name NAME --data-dir DIR`: one chain worker."""

from __future__ import annotations

import argparse
from pathlib import Path

from workers.worker import main

parser = argparse.ArgumentParser(prog="python -m workers", description="chainyard chain worker")
parser.add_argument("--name", help="stable identity (the pod name); default CHAINYARD_WORKER_NAME or hostname")
parser.add_argument("--data-dir", type=Path, help="volume for checkpoints and compile cache")
args = parser.parse_args()
main(args.name, args.data_dir)
