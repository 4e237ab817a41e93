#!/usr/bin/env bash
# Regenerate the image's hash-pinned lock files for linux x86_64 / CPython 3.11:
#   requirements.lock        runtime dependencies, from pyproject.toml's [project] dependencies
#   requirements-build.lock  the build backend the Dockerfile's build stage uses (build-requirements.in)
#   requirements-cuda.lock   what the CUDA image variant adds (cuda-requirements.in: jax's CUDA 12 plugin and
#                            NVIDIA's wheels), constrained by requirements.lock
# Run after changing a dependency in pyproject.toml (after a jax upgrade, give cuda-requirements.in the new
# version first); tests/deploy/test_lock.py checks that they agree.
set -euo pipefail
cd "$(dirname "$0")/../.."
UV=${UV:-.venv/bin/uv}
common=(--quiet --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28
        --custom-compile-command tools/deploy/lock.sh)
"$UV" pip compile "${common[@]}" pyproject.toml -o requirements.lock
"$UV" pip compile "${common[@]}" tools/deploy/build-requirements.in -o requirements-build.lock
"$UV" pip compile "${common[@]}" tools/deploy/cuda-requirements.in -c requirements.lock -o requirements-cuda.lock
