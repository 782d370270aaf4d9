"""The YAML loader keeps the position of every node and refuses what YAML lets slip."""

from __future__ import annotations

import textwrap

import pytest

from nodenetd.config.yamlload import YDict, YList, format_path, load_file, load_text, locate
from nodenetd.errors import ConfigError, SourcePosition


def load(text: str, name: str = "p.yaml") -> YDict:
    return load_text(textwrap.dedent(text).lstrip("\n"), name)


def only_issue(excinfo: pytest.ExceptionInfo[ConfigError]):
    assert len(excinfo.value.issues) == 1, excinfo.value
    return excinfo.value.issues[0]


def test_mappings_and_lists_carry_the_position_of_every_key_value_and_item():
    doc = load(
        """
        # a comment
        sysctls:
          net.core.somaxconn: 4096
        interfaces:
          - name: first
            match: {name: [eth0, "eth1"]}
        """
    )
    assert doc.pos == SourcePosition("p.yaml", 2, 1)
    assert doc.key_pos["sysctls"] == SourcePosition("p.yaml", 2, 1)
    assert doc["sysctls"].value_pos["net.core.somaxconn"] == SourcePosition("p.yaml", 3, 23)
    rules = doc["interfaces"]
    assert isinstance(rules, YList)
    assert rules.item_pos[0] == SourcePosition("p.yaml", 5, 5)
    names = rules[0]["match"]["name"]
    assert names == ["eth0", "eth1"]
    assert [p.column for p in names.item_pos] == [20, 26]


def test_locate_points_at_scalars_at_their_value_and_at_collections_by_their_key():
    doc = load(
        """
        interfaces:
          - features:
              gro: true
        """
    )
    assert locate(doc, ["interfaces", 0, "features", "gro"]).column == 12
    assert locate(doc, ["interfaces", 0, "features"]).line == 2
    assert locate(doc, ["interfaces", 0, "features", "gro"], key=True).column == 7
    # a path that leaves the document stops at the deepest node that exists
    assert locate(doc, ["interfaces", 0, "features", "nope", 3]).line == 2


def test_keys_stay_the_text_that_was_written():
    doc = load(
        """
        features: {on: true, "off": false}
        channels: {1: max}
        """
    )
    assert list(doc["features"]) == ["on", "off"]
    assert doc["features"]["on"] is True  # values still follow YAML: on/off are booleans
    assert list(doc["channels"]) == ["1"]


def test_a_duplicate_key_is_an_error_naming_both_lines_and_the_full_key_path():
    with pytest.raises(ConfigError) as excinfo:
        load(
            """
            interfaces:
              - name: a
                mtu: 1500
                state: up
                mtu: 9000
            """
        )
    issue = only_issue(excinfo)
    assert issue.position.line == 5
    assert issue.key_path == "interfaces[0].mtu"
    assert "duplicate key 'mtu' (first set at line 3)" in issue.message


def test_every_duplicate_is_reported_not_just_the_first():
    with pytest.raises(ConfigError) as excinfo:
        load("a: 1\nb: 2\na: 3\nb: 4\n")
    assert [(i.position.line, i.key_path) for i in excinfo.value.issues] == [(3, "a"), (4, "b")]


def test_yaml_merge_keys_may_be_overridden_without_a_duplicate_error():
    doc = load(
        """
        defaults: &d {mtu: 1500, state: up}
        rule:
          <<: *d
          mtu: 9000
        """
    )
    assert doc["rule"] == {"mtu": 9000, "state": "up"}
    assert doc["rule"].key_pos["mtu"].line == 4


def test_a_syntax_error_names_the_line_and_the_parsers_problem():
    with pytest.raises(ConfigError) as excinfo:
        load("sysctls:\n  a.b: [1\n  c.d: 2\n")
    issue = only_issue(excinfo)
    assert issue.position.file == "p.yaml"
    assert issue.position.line == 3
    assert "invalid YAML" in issue.message
    assert "expected ',' or ']'" in issue.message


def test_tab_indentation_gets_a_hint():
    with pytest.raises(ConfigError) as excinfo:
        load_text("sysctls:\n\tnet.core.somaxconn: 1\n", "t.yaml")
    issue = only_issue(excinfo)
    assert issue.position.line == 2
    assert "tabs" in issue.hint


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing but a comment\n", "---\n"])
def test_an_empty_file_is_a_clear_error(text):
    with pytest.raises(ConfigError) as excinfo:
        load_text(text, "e.yaml")
    assert str(only_issue(excinfo)).startswith("e.yaml:1: <top>: file is empty")


def test_the_top_level_must_be_a_mapping():
    with pytest.raises(ConfigError) as excinfo:
        load_text("- eth0\n", "l.yaml")
    assert "the top level is a list" in only_issue(excinfo).message


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load_file(tmp_path / "nope.yaml")
    issue = only_issue(excinfo)
    assert str(issue) == f"{tmp_path}/nope.yaml: file not found (expected an existing YAML file)"


def test_format_path_reads_like_the_yaml():
    assert format_path(["interfaces", 0, "features", "gro"]) == "interfaces[0].features.gro"
    assert format_path(["sysctls", "net.core.somaxconn"]) == "sysctls.net.core.somaxconn"
    assert format_path([]) == ""
