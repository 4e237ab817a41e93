"""The image's lock files (tools/deploy/lock.sh) agree with pyproject.toml and are complete and hash-pinned; the
CUDA variant's lock adds jax's CUDA plugin of the same version and changes nothing the CPU image has."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy.chart import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ENTRY = re.compile(r"^([A-Za-z0-9._-]+)==(\S+) \\$")
# the image: CPython 3.11 on linux x86_64
TARGET = default_environment() | {"python_version": "3.11", "python_full_version": "3.11.14", "sys_platform": "linux",
                                  "platform_system": "Linux", "platform_machine": "x86_64",
                                  "implementation_name": "cpython", "platform_python_implementation": "CPython",
                                  "os_name": "posix"}


def parse_lock(text: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a `uv pip compile --generate-hashes` file."""
    entries: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in text.splitlines():
        match = ENTRY.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            entries[current] = (match.group(2), [])
        elif line.strip().startswith("--hash=sha256:") and current:
            entries[current][1].append(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
        elif line and not line.startswith((" ", "#")):
            raise AssertionError(f"unexpected lock line: {line}")
    return entries


def pin_mismatches(requirements: list[str], lock: dict[str, tuple[str, list[str]]]) -> list[str]:
    problems = []
    for text in requirements:
        requirement = Requirement(text)
        pins = [s.version for s in requirement.specifier if s.operator == "=="]
        locked = lock.get(canonicalize_name(requirement.name))
        if locked is None:
            problems.append(f"{requirement.name}: not in the lock")
        elif pins and locked[0] != pins[0]:
            problems.append(f"{requirement.name}: pyproject pins {pins[0]}, the lock has {locked[0]}")
    return problems


def repins(lock: dict[str, tuple[str, list[str]]], base: dict[str, tuple[str, list[str]]]) -> list[str]:
    """Packages `lock` pins to another version than `base` does (installed after it, it would replace them)."""
    return [f"{name}: {base[name][0]} -> {version}" for name, (version, _) in sorted(lock.items())
            if name in base and base[name][0] != version]


LOCK = parse_lock((ROOT / "requirements.lock").read_text())
BUILD_LOCK = parse_lock((ROOT / "requirements-build.lock").read_text())
CUDA_LOCK = parse_lock((ROOT / "requirements-cuda.lock").read_text())
CUDA_INPUT = [line for line in (ROOT / "tools" / "deploy" / "cuda-requirements.in").read_text().splitlines()
              if line and not line.startswith("#")]


def test_every_runtime_dependency_is_pinned_in_pyproject() -> None:
    for text in PYPROJECT["project"]["dependencies"]:
        assert [s.operator for s in Requirement(text).specifier] == ["=="], text


def test_lock_has_pyprojects_pins() -> None:
    assert pin_mismatches(PYPROJECT["project"]["dependencies"], LOCK) == []


def test_pin_check_tells_a_stale_lock() -> None:
    stale = dict(LOCK) | {"numpy": ("1.26.4", ["0" * 64])}
    stale.pop("redis")
    assert pin_mismatches(["numpy==2.4.6", "redis==8.1.0"], stale) == [
        "numpy: pyproject pins 2.4.6, the lock has 1.26.4", "redis: not in the lock"]


def test_every_locked_package_is_hash_pinned() -> None:
    for lock in (LOCK, BUILD_LOCK, CUDA_LOCK):
        for name, (version, hashes) in lock.items():
            assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), (name, version)
    assert "chainyard" not in LOCK


def test_lock_is_closed_under_dependencies() -> None:
    # the image installs with --no-deps: a dependency missing from the lock would be missing at run time.
    # Requirements are read from this environment's metadata where its version equals the locked one.
    checked, missing = 0, []
    for name, (version, _) in LOCK.items():
        try:
            if metadata.version(name) != version:
                continue
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        checked += 1
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate(TARGET | {"extra": ""}):
                continue
            locked = LOCK.get(canonicalize_name(requirement.name))
            if locked is None or not requirement.specifier.contains(locked[0], prereleases=True):
                missing.append(f"{name} {version} needs {requirement}")
    assert missing == []
    assert checked >= 0.8 * len(LOCK)


def test_build_lock_satisfies_the_build_system() -> None:
    for text in PYPROJECT["build-system"]["requires"]:
        requirement = Requirement(text)
        locked = BUILD_LOCK[canonicalize_name(requirement.name)][0]
        assert requirement.specifier.contains(Version(locked)), (text, locked)


def test_cuda_plugin_is_the_locked_jax_version() -> None:
    # jax loads a CUDA plugin only of its jaxlib's version
    jax = {LOCK[name][0] for name in ("jax", "jaxlib")}
    cuda = {CUDA_LOCK[name][0] for name in ("jax-cuda12-plugin", "jax-cuda12-pjrt")}
    assert len(jax) == 1 and cuda == jax
    assert pin_mismatches(CUDA_INPUT, CUDA_LOCK) == []
    assert {str(Requirement(text).specifier) for text in CUDA_INPUT} == {f"=={version}" for version in jax}


def test_cuda_lock_adds_only_the_plugin_and_nvidias_libraries() -> None:
    assert "with-cuda" in Requirement(next(t for t in CUDA_INPUT if t.startswith("jax-cuda12-plugin"))).extras
    others = [name for name in CUDA_LOCK if not name.startswith(("jax-cuda12-", "nvidia-"))]
    assert others == []
    # the libraries the with-cuda extra names (XLA compiles with nvcc's ptxas, and loads cuDNN and cuBLAS)
    assert {"nvidia-cuda-nvcc-cu12", "nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12"} <= set(
        CUDA_LOCK)


def test_cuda_lock_repins_nothing_the_cpu_image_has() -> None:
    assert repins(CUDA_LOCK, LOCK) == []


def test_repin_check_tells_a_changed_version() -> None:
    cuda = dict(CUDA_LOCK) | {"numpy": ("1.26.4", ["0" * 64]), "jax": (LOCK["jax"][0], ["0" * 64])}
    assert repins(cuda, LOCK) == [f"numpy: {LOCK['numpy'][0]} -> 1.26.4"]


def test_locks_say_how_to_regenerate_them() -> None:
    for name in ("requirements.lock", "requirements-build.lock", "requirements-cuda.lock"):
        assert "#    tools/deploy/lock.sh" in (ROOT / name).read_text().splitlines()[1]
