"""Loading: a profile or node config file becomes typed models that remember their lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodenetd.config import loader
from nodenetd.config.loader import load_node_config, load_profile, validate_files
from nodenetd.config.model import (
    DEFAULT_PROFILE_DIRS,
    DEFAULT_STATE_DIR,
    INTERFACE_SETTING_KINDS,
    Selector,
    SysctlValue,
)
from nodenetd.config.vocabulary import expand_feature
from nodenetd.errors import ConfigError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "config"
FULL = FIXTURES / "profiles" / "full.yaml"
TSO = expand_feature("tso")


@pytest.fixture(scope="module")
def full():
    return load_profile(FULL)


def line_of(wanted) -> int:
    return wanted.origin.position.line


class TestProfileRoundTrip:
    def test_name_comes_from_the_file_stem_and_extends_is_a_tuple(self, full):
        assert full.name == "full"
        assert full.path == str(FULL)
        assert full.description == "Higher throughput for bulk transfer"
        assert full.extends == ("base",)

    def test_global_sysctls_are_typed_with_operator_and_fields(self, full):
        assert {key: w.value for key, w in full.sysctls.items()} == {
            "net.core.somaxconn": SysctlValue(">=", (4096,)),
            "net.ipv4.tcp_rmem": SysctlValue("=", (4096, 131072, 16777216)),
            "net.ipv4.tcp_wmem": SysctlValue(">=", (4096, 16384, 16777216)),
            "net.core.netdev_budget": SysctlValue("<=", (600,)),
            "net.ipv4.tcp_congestion_control": SysctlValue("=", ("bbr",)),
            "net.ipv4.ip_forward": SysctlValue("=", (1,)),
        }

    def test_global_sysctls_remember_profile_and_line(self, full):
        wanted = full.sysctls["net.ipv4.tcp_congestion_control"]
        assert wanted.origin.profile == "full"
        assert wanted.origin.rule is None
        assert str(wanted.origin.position) == f"{FULL}:9"

    def test_the_selector_keeps_every_field(self, full):
        assert full.rules[0].selector == Selector(
            names=("eth*", "ens*"),
            exclude=("eth9",),
            kinds=("physical",),
            drivers=("ixgbe", "mlx5_core"),
            macs=("aa:bb:cc:*",),
            udev=(("ID_PATH", "pci-0000:3b:00.*"), ("ID_NET_DRIVER", "ixgbe")),
        )

    def test_rules_are_named_and_positioned(self, full):
        first, second = full.rules
        assert first.name == "uplinks"
        assert first.origin.position.line == 12
        assert second.name == "interfaces[1]"  # the default name
        assert second.selector == Selector(kinds=("veth",))  # a single string is a 1-tuple

    def test_settings_are_grouped_by_kind_in_the_models_vocabulary(self, full):
        settings = full.rules[0].settings
        assert set(settings) <= set(INTERFACE_SETTING_KINDS)
        assert {k: w.value for k, w in settings["link"].items()} == {
            "mtu": 9000,
            "txqueuelen": 10000,
            "state": "up",
        }
        assert {k: w.value for k, w in settings["channels"].items()} == {"combined": "max"}
        assert {k: w.value for k, w in settings["rings"].items()} == {"rx": "max", "tx": 4096}
        assert {k: w.value for k, w in settings["coalesce"].items()} == {
            "adaptive-rx": True,
            "rx-usecs": 50,
        }
        assert {k: w.value for k, w in settings["sysctl"].items()} == {
            "net.ipv4.conf.IF.rp_filter": SysctlValue("=", (2,)),
            "net.ipv6.conf.IF.accept_ra": SysctlValue("=", (0,)),
        }

    def test_only_the_kinds_a_rule_sets_are_present(self, full):
        assert set(full.rules[1].settings) == {"features"}

    def test_feature_aliases_expand_to_kernel_names(self, full):
        features = full.rules[0].settings["features"]
        assert set(features) == {"rx-gro", "rx-gro-hw", *TSO}
        assert all(features[name].value is True for name in TSO)  # "tso: on"
        assert features["rx-gro-hw"].value is False

    def test_an_expanded_feature_points_at_the_alias_line_and_remembers_the_alias(self, full):
        features = full.rules[0].settings["features"]
        assert {line_of(features[name]) for name in TSO} == {23}
        assert {features[name].via for name in TSO} == {"tso"}
        assert features["rx-gro"].via == "gro"
        assert features["rx-gro-hw"].via is None  # written as the kernel name

    def test_setting_origins_name_the_rule_and_the_line(self, full):
        link = full.rules[0].settings["link"]
        assert [line_of(link[k]) for k in ("mtu", "txqueuelen", "state")] == [20, 21, 22]
        assert link["mtu"].origin.rule == "uplinks"
        assert line_of(full.rules[0].settings["sysctl"]["net.ipv6.conf.IF.accept_ra"]) == 29
        assert line_of(full.rules[1].settings["features"]["tx-checksum-ip-generic"]) == 32

    def test_positions_table_points_at_every_key_path(self, full):
        assert full.positions["extends[0]"].line == 3
        assert full.positions["interfaces[0].features.tso"].line == 23


class TestNodeConfig:
    def test_a_full_node_config(self):
        node = load_node_config(FIXTURES / "nodenetd.yaml")
        assert node.path == str(FIXTURES / "nodenetd.yaml")
        assert node.profiles == ("app", "top")
        assert node.profile_dirs == (str(FIXTURES / "profiles"),)  # relative to the file
        assert node.state_dir == "/run/nodenetd-test"
        assert node.strict is True
        assert node.positions["profiles[1]"].line == 2

    def test_overrides_are_a_profile_called_overrides_in_the_node_config(self):
        node = load_node_config(FIXTURES / "nodenetd.yaml")
        overrides = node.overrides
        assert overrides.name == "overrides"
        assert overrides.path == node.path
        wanted = overrides.sysctls["net.core.somaxconn"]
        assert wanted.value == SysctlValue("=", (9999,))
        assert (wanted.origin.profile, wanted.origin.position.line) == ("overrides", 8)
        (rule,) = overrides.rules
        assert rule.name == "local"
        assert rule.settings["link"]["mtu"].origin.position.line == 12

    def test_defaults(self, tmp_path):
        path = tmp_path / "node.yaml"
        path.write_text("profiles: kubernetes-node\n")
        node = load_node_config(path)
        assert node.profiles == ("kubernetes-node",)
        assert node.profile_dirs == DEFAULT_PROFILE_DIRS
        assert node.state_dir == DEFAULT_STATE_DIR
        assert node.strict is False
        assert node.overrides is None

    def test_unnamed_override_rules_are_named_by_their_path(self, tmp_path):
        path = tmp_path / "node.yaml"
        path.write_text("profiles: [a]\noverrides:\n  interfaces:\n    - mtu: 1500\n")
        assert load_node_config(path).overrides.rules[0].name == "overrides.interfaces[0]"

    def test_no_default_config_says_how_to_create_one(self, tmp_path, monkeypatch):
        missing = tmp_path / "etc" / "nodenetd.yaml"
        monkeypatch.setattr(loader, "DEFAULT_CONFIG_PATH", str(missing))
        with pytest.raises(ConfigError) as excinfo:
            load_node_config(None)
        (issue,) = excinfo.value.issues
        assert issue.key_path == str(missing)
        assert "no config" in issue.message
        assert "--config" in issue.hint

    def test_none_means_the_default_path(self, tmp_path, monkeypatch):
        path = tmp_path / "nodenetd.yaml"
        path.write_text("profiles: [a]\n")
        monkeypatch.setattr(loader, "DEFAULT_CONFIG_PATH", str(path))
        assert load_node_config(None).path == str(path)


class TestValidateFiles:
    def test_valid_fixtures_have_no_issues(self):
        files = [FIXTURES / "nodenetd.yaml", *sorted((FIXTURES / "profiles").glob("*.yaml"))]
        assert validate_files(files, search_dirs=[]) == []

    def test_every_issue_of_a_file_is_reported_in_line_order(self):
        issues = validate_files([FIXTURES / "many-issues.yaml"], search_dirs=[])
        assert [(i.position.line, i.key_path) for i in issues] == [
            (1, "descripton"),
            (3, "sysctls.net/ipv4/ip_forward"),
            (4, "sysctls.net.core.rmem_max"),
            (6, "interfaces[0].match.kind"),
            (7, "interfaces[0].mtu"),
            (8, "interfaces[0].features.groo"),
        ]

    def test_the_message_names_file_line_key_expectation_and_suggestion(self):
        issues = validate_files([FIXTURES / "many-issues.yaml"], search_dirs=[])
        assert str(issues[-1]) == (
            f"{FIXTURES}/many-issues.yaml:8: interfaces[0].features.groo: unknown feature "
            "(expected a kernel feature name or ethtool alias); did you mean 'gro'?"
        )

    def test_a_profile_is_checked_with_its_parents(self):
        issues = validate_files([FIXTURES / "broken" / "child.yaml"], search_dirs=[])
        assert [(i.position.file, i.position.line, i.key_path) for i in issues] == [
            (str(FIXTURES / "broken" / "parent.yaml"), 3, "interfaces[0].mtuu")
        ]

    def test_an_issue_reached_twice_is_reported_once(self):
        files = [FIXTURES / "broken" / "child.yaml", FIXTURES / "broken" / "parent.yaml"]
        assert len(validate_files(files, search_dirs=[])) == 1

    def test_a_node_config_is_recognised_by_its_keys_even_without_profiles(self, tmp_path):
        path = tmp_path / "node.yaml"
        path.write_text("state_dir: /var/lib/x\n")
        (issue,) = validate_files([path], search_dirs=[])
        assert (issue.key_path, issue.message) == ("profiles", "missing required key")

    @pytest.mark.parametrize(
        ("text", "name", "is_node"),
        [
            ("profiles: [a]\n", "x.yaml", True),
            ("strict: true\n", "x.yaml", True),
            ("profile: [a]\n", "x.yaml", True),  # a near-miss of a node-only key
            ("profile: [a]\ninterfaces: []\n", "x.yaml", False),  # a real profile key wins
            ("sysctl: {}\n", "x.yaml", False),
            ("description: x\n", "nodenetd.yaml", True),  # the node config's own name
        ],
    )
    def test_node_configs_are_told_from_profiles(self, tmp_path, text, name, is_node):
        path = tmp_path / name
        path.write_text(text)
        doc = loader.load_file(path)
        assert loader.looks_like_node_config(doc, path) is is_node

    def test_profile_references_are_checked_even_when_other_keys_are_wrong(self, tmp_path):
        path = tmp_path / "p.yaml"
        path.write_text("extends: [nope]\ninterfaces:\n  - mtu: 1\n")
        issues = validate_files([path], search_dirs=[])
        assert [i.key_path for i in issues] == ["interfaces[0].mtu", "extends[0]"]

    def test_load_profile_raises_with_every_issue(self):
        with pytest.raises(ConfigError) as excinfo:
            load_profile(FIXTURES / "many-issues.yaml")
        assert len(excinfo.value.issues) == 6
        assert str(excinfo.value).count("\n") == 5  # one line per issue
