#!/usr/bin/env bash
# Regenerate the image's hash-pinned lock files for linux x86_64 / CPython 3.11:
#   requirements.lock        runtime dependencies, from pyproject.toml's [project] dependencies
#   requirements-build.lock  the build backend the Dockerfile's build stage uses (build-requirements.in)
# Run after changing a dependency in pyproject.toml; tests/deploy/test_lock.py checks that they agree.
set -euo pipefail
cd "$(dirname "$0")/../.."
UV=${UV:-.venv/bin/uv}
common=(--quiet --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28
        --custom-compile-command tools/deploy/lock.sh)
"$UV" pip compile "${common[@]}" pyproject.toml -o requirements.lock
"$UV" pip compile "${common[@]}" tools/deploy/build-requirements.in -o requirements-build.lock
