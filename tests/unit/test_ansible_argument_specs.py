"""The nodenetd role's meta/argument_specs.yml and defaults/main.yml describe the same
variables: same names, same defaults, types that fit, documented choices that include the
default (as prometheus-community's lint_arguments_spec.sh checks for its roles)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "nodenetd"
TYPES = {"str": str, "bool": bool, "int": int, "list": list, "dict": dict}


def defaults() -> dict:
    return yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def options() -> dict:
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]["main"]["options"]


def test_the_same_variables_in_both_files() -> None:
    assert sorted(options()) == sorted(defaults())


def test_every_variable_is_the_roles_own() -> None:
    assert [name for name in defaults() if not name.startswith("nodenetd_")] == []


@pytest.mark.parametrize("name", sorted(options()))
def test_each_option_is_described_typed_and_defaulted_as_in_defaults(name: str) -> None:
    spec, default = options()[name], defaults()[name]
    assert spec.get("description"), f"{name}: no description"
    assert spec["type"] in TYPES, f"{name}: type {spec['type']!r}"
    assert isinstance(default, TYPES[spec["type"]]), (
        f"{name}: default {default!r} is not a {spec['type']}")
    if spec["type"] == "int":
        assert not isinstance(default, bool)
    assert spec.get("default") == default, (
        f"{name}: argument_specs says {spec.get('default')!r}, defaults/main.yml {default!r}")
    if "choices" in spec:
        assert default in spec["choices"]
    if spec["type"] == "list":
        assert spec.get("elements") in TYPES
        assert all(isinstance(item, TYPES[spec["elements"]]) for item in default)
