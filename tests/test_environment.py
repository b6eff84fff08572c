"""The install descriptions agree: pyproject.toml (lower bounds), environment.yml (conda), constraints.txt (CI's pins)."""
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name


def _split(requirement: str) -> tuple[str, str]:
    match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", requirement.strip())
    return match.group(1).lower().replace("_", "-"), match.group(2).replace(" ", "")


def _pyproject() -> dict:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["test"]
    return dict(_split(r) for r in requirements)


def _conda() -> dict:
    packages = {}
    text = (ROOT / "environment.yml").read_text()
    for line in text.split("\ndependencies:\n", 1)[1].splitlines():
        match = re.fullmatch(r"\s+- ([A-Za-z][^:#]*?)\s*(#.*)?", line)
        if match and not match.group(1).startswith("--"):
            name, spec = _split(match.group(1))
            if name not in ("python", "pip"):
                packages[CONDA_NAMES.get(name, name)] = spec
    return packages


def test_environment_yml_names_the_same_packages_and_bounds_as_pyproject():
    assert _conda() == _pyproject()


def test_pyproject_has_lower_bounds_only():
    for name, spec in _pyproject().items():
        assert spec.startswith(">="), f"{name}{spec}: pyproject.toml keeps lower bounds only (pins go in constraints.txt)"
        assert "<" not in spec and "==" not in spec, f"{name}{spec} has an upper pin"


def test_constraints_pin_every_dependency_exactly_and_satisfy_the_bounds():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    for name, spec in _pyproject().items():
        assert name in pins, f"{name} is missing from constraints.txt"
        pinned = tuple(int(p) for p in re.findall(r"\d+", pins[name])[:2])
        lower = tuple(int(p) for p in re.findall(r"\d+", spec)[:2])
        assert pinned >= lower, f"constraints.txt pins {name}=={pins[name]}, below pyproject's {spec}"
