"""The shipped JSON Schemas are valid, agree with the vocabulary, and sysctl values parse."""

from __future__ import annotations

import re

import pytest
from jsonschema import Draft202012Validator

from nodenetd.config import vocabulary
from nodenetd.config.model import SysctlValue
from nodenetd.config.validate import (
    NODE_SCHEMA,
    PROFILE_SCHEMA,
    SysctlValueError,
    load_schema,
    parse_sysctl_value,
)

RULE = load_schema(PROFILE_SCHEMA)["$defs"]["interfaceRule"]["properties"]
DEFS = load_schema(PROFILE_SCHEMA)["$defs"]


@pytest.mark.parametrize("name", [PROFILE_SCHEMA, NODE_SCHEMA])
def test_the_shipped_schemas_are_valid_draft_2020_12(name):
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("name", [PROFILE_SCHEMA, NODE_SCHEMA])
def test_every_object_forbids_unknown_keys_and_every_property_is_described(name):
    def walk(node, where):
        if isinstance(node, dict):
            if node.get("type") == "object" and "additionalProperties" not in node:
                pytest.fail(f"{where}: object without additionalProperties")
            for key, sub in node.get("properties", {}).items():
                has_text = "description" in sub or "$ref" in sub
                assert has_text, f"{where}.{key}: no description"
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}[{index}]")

    walk(load_schema(name), name)


def test_the_node_schema_reuses_the_profile_body_definitions():
    node = load_schema(NODE_SCHEMA)
    assert "$defs" not in node
    overrides = node["properties"]["overrides"]["properties"]
    assert overrides["sysctls"] == {"$ref": "profile.schema.json#/$defs/sysctls"}
    assert overrides["interfaces"] == {"$ref": "profile.schema.json#/$defs/interfaces"}


def test_schema_names_match_the_vocabulary():
    assert set(RULE["features"]["properties"]) == set(vocabulary.FEATURE_NAMES)
    assert list(RULE["channels"]["properties"]) == list(vocabulary.CHANNEL_KEYS)
    assert list(RULE["rings"]["properties"]) == list(vocabulary.RING_KEYS)
    assert list(RULE["coalesce"]["properties"]) == list(vocabulary.COALESCE_KEYS)
    assert RULE["state"]["enum"] == list(vocabulary.LINK_STATES)
    assert DEFS["kind"]["enum"] == list(vocabulary.INTERFACE_KINDS)
    coalesce = RULE["coalesce"]["properties"]
    assert {k for k, v in coalesce.items() if v["type"] == "boolean"} == set(
        vocabulary.COALESCE_BOOL_KEYS
    )


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("net.ipv4.conf.IF.rp_filter", True),
        ("net.ipv6.neigh.IF.base_reachable_time_ms", True),
        ("net.ipv4.conf.eth0.rp_filter", False),
        ("net.core.IF.x", False),
        ("net.ipv4.conf.IF.", False),
    ],
)
def test_the_interface_sysctl_key_pattern_follows_the_vocabulary_prefixes(key, ok):
    pattern = re.compile(DEFS["interfaceSysctls"]["propertyNames"]["pattern"])
    assert bool(pattern.search(key)) is ok
    assert key.startswith(vocabulary.PER_INTERFACE_SYSCTL_PREFIXES) or not ok


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1, SysctlValue("=", (1,))),
        (-1, SysctlValue("=", (-1,))),
        ("1", SysctlValue("=", (1,))),
        ("4096 131072 16777216", SysctlValue("=", (4096, 131072, 16777216))),
        ("4096\t87380  6291456", SysctlValue("=", (4096, 87380, 6291456))),
        ("bbr", SysctlValue("=", ("bbr",))),
        ("fq", SysctlValue("=", ("fq",))),
        (">=4096", SysctlValue(">=", (4096,))),
        (">= 4096 16384 16777216", SysctlValue(">=", (4096, 16384, 16777216))),
        ("<=600", SysctlValue("<=", (600,))),
    ],
)
def test_sysctl_values_parse(raw, expected):
    assert parse_sysctl_value(raw) == expected


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (True, "is a boolean"),
        (None, "missing value"),
        ("", "empty value"),
        (">=", "'>=' without a number"),
        (">=bbr", "needs integer fields"),
        ("<=1 x", "needs integer fields"),
        ("=>4096", "unknown operator"),
        ([1, 2], "a list is not a sysctl value"),
        (0.5, "invalid value 0.5"),
    ],
)
def test_bad_sysctl_values_say_why(raw, fragment):
    with pytest.raises(SysctlValueError) as excinfo:
        parse_sysctl_value(raw)
    assert fragment in excinfo.value.message


def test_sysctl_value_text_round_trips():
    assert str(parse_sysctl_value(">=4096 16384 16777216")) == ">=4096 16384 16777216"
    assert str(parse_sysctl_value("bbr")) == "bbr"
