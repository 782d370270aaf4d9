"""debian/requirements.txt, the Debian package's private environment, keeps up with
pyproject.toml: every run-time dependency (and the systemd extra) is pinned to a version its
specifier allows, with hashes, and so is everything those pins need in turn."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PINS_FILE = REPO / "debian" / "requirements.txt"
PYTHON = {**default_environment(), "python_version": "3.11", "python_full_version": "3.11.2"}


def pins() -> dict[str, tuple[Version, list[str]]]:
    """{canonical name: (version, hashes)} from the hash-pinned requirements file."""
    text = re.sub(r"\\\n", " ", PINS_FILE.read_text())
    found = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split()
        name, _, version = spec.partition("==")
        assert version, f"{spec}: pin an exact version (name==version)"
        found[canonicalize_name(name)] = (Version(version),
                                          [o for o in options if o.startswith("--hash=sha256:")])
    return found


def declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in
            [*project["dependencies"], *project["optional-dependencies"]["systemd"]]]


def test_every_pin_has_a_sha256() -> None:
    assert [name for name, (_, hashes) in pins().items() if not hashes] == []


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_each_dependency_of_the_project_is_pinned_to_an_allowed_version(
        requirement: Requirement) -> None:
    pinned = pins().get(canonicalize_name(requirement.name))
    assert pinned is not None, f"{requirement.name} is not in debian/requirements.txt"
    assert requirement.specifier.contains(pinned[0], prereleases=True), (
        f"debian/requirements.txt pins {requirement.name}=={pinned[0]}, "
        f"pyproject.toml asks for {requirement.specifier}")


def test_what_the_pins_need_is_pinned_too() -> None:
    """The closure, from the metadata of the versions installed here (the environment the
    test suite runs in); distributions not installed here are not followed."""
    pinned = pins()
    missing = []
    for name in pinned:
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in requires:
            need = Requirement(text)
            if need.marker and not need.marker.evaluate({**PYTHON, "extra": ""}):
                continue
            if canonicalize_name(need.name) not in pinned:
                missing.append(f"{need.name} (needed by {name})")
    assert missing == []
