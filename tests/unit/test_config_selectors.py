"""Selectors: every given field must match, any entry of a field may; costly facts are lazy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nodenetd.config.loader import load_profile
from nodenetd.config.model import Selector
from nodenetd.config.selectors import InterfaceFacts, matches

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "config"


@dataclass
class Facts:
    """An interface as a selector sees it, counting the costly look-ups."""

    name: str
    kinds: frozenset[str] = frozenset({"physical"})
    mac: str | None = "aa:bb:cc:dd:ee:ff"
    driver_name: str | None = "ixgbe"
    udev: dict[str, str] = field(default_factory=dict)
    driver_calls: int = 0
    udev_calls: int = 0

    def driver(self) -> str | None:
        self.driver_calls += 1
        return self.driver_name

    def udev_properties(self) -> Mapping[str, str]:
        self.udev_calls += 1
        return self.udev


def test_facts_fake_satisfies_the_protocol():
    facts: InterfaceFacts = Facts("eth0")
    assert matches(Selector(), facts)


def test_an_empty_selector_matches_every_interface():
    assert matches(Selector(), Facts("anything", kinds=frozenset(), mac=None))


@pytest.mark.parametrize(
    ("name", "expected"),
    [("eth0", True), ("ens1f0", True), ("eno1", False), ("veth12", False), ("ETH0", False)],
)
def test_name_globs_are_ored_and_case_sensitive(name, expected):
    assert matches(Selector(names=("eth*", "ens*")), Facts(name)) is expected


def test_exclude_wins_over_a_matching_name():
    selector = Selector(names=("eth*",), exclude=("eth9", "eth1?"))
    assert matches(selector, Facts("eth0"))
    assert not matches(selector, Facts("eth9"))
    assert not matches(selector, Facts("eth10"))


def test_exclude_alone_matches_everything_else():
    assert matches(Selector(exclude=("lo",)), Facts("eth0"))
    assert not matches(Selector(exclude=("lo",)), Facts("lo"))


def test_character_classes_work():
    assert matches(Selector(names=("eth[0-3]",)), Facts("eth2"))
    assert not matches(Selector(names=("eth[0-3]",)), Facts("eth4"))


def test_kind_matches_any_of_the_interfaces_kinds():
    member = Facts("eth0", kinds=frozenset({"physical", "bond-member"}))
    assert matches(Selector(kinds=("bond-member",)), member)
    assert matches(Selector(kinds=("veth", "physical")), member)
    assert not matches(Selector(kinds=("veth",)), member)


def test_mac_globs_are_case_insensitive_both_ways():
    facts = Facts("eth0", mac="AA:BB:CC:00:11:22")
    assert matches(Selector(macs=("aa:bb:cc:*",)), facts)
    assert matches(Selector(macs=("AA:bb:Cc:00:11:22",)), Facts("eth0", mac="aa:bb:cc:00:11:22"))
    assert not matches(Selector(macs=("aa:bb:cd:*",)), facts)


def test_an_interface_without_a_mac_never_matches_a_mac_selector():
    assert not matches(Selector(macs=("*",)), Facts("wg0", mac=None))


def test_driver_is_looked_up_only_when_the_selector_names_one():
    facts = Facts("eth0")
    assert matches(Selector(names=("eth*",)), facts)
    assert facts.driver_calls == 0
    assert matches(Selector(drivers=("mlx5_core", "ixgbe")), facts)
    assert facts.driver_calls == 1


def test_driver_is_not_looked_up_when_a_cheaper_field_already_fails():
    facts = Facts("veth0", kinds=frozenset({"veth"}))
    assert not matches(Selector(names=("eth*",), drivers=("ixgbe",)), facts)
    assert not matches(Selector(kinds=("physical",), drivers=("ixgbe",)), facts)
    assert not matches(Selector(macs=("00:*",), drivers=("ixgbe",)), facts)
    assert facts.driver_calls == 0


def test_driver_globs_and_an_unknown_driver():
    assert matches(Selector(drivers=("mlx5*",)), Facts("eth0", driver_name="mlx5_core"))
    assert not matches(Selector(drivers=("*",)), Facts("eth0", driver_name=None))


def test_udev_properties_must_all_match_and_are_looked_up_lazily():
    facts = Facts("eth0", udev={"ID_PATH": "pci-0000:3b:00.1", "ID_NET_DRIVER": "ixgbe"})
    both = Selector(udev=(("ID_PATH", "pci-0000:3b:00.*"), ("ID_NET_DRIVER", "ixgbe")))
    assert matches(both, facts)
    wrong_driver = Selector(udev=(("ID_PATH", "pci-0000:3b:00.*"), ("ID_NET_DRIVER", "i40e")))
    assert not matches(wrong_driver, facts)
    assert not matches(Selector(udev=(("ID_VENDOR", "*"),)), facts)  # absent property
    assert facts.udev_calls == 3
    assert not matches(Selector(names=("eno*",), udev=(("ID_PATH", "*"),)), facts)
    assert facts.udev_calls == 3


def test_udev_is_not_looked_up_when_the_driver_already_fails():
    facts = Facts("eth0", driver_name="e1000e")
    assert not matches(Selector(drivers=("ixgbe",), udev=(("ID_PATH", "*"),)), facts)
    assert (facts.driver_calls, facts.udev_calls) == (1, 0)


def test_a_loaded_rule_selects_as_written():
    rule = load_profile(FIXTURES / "profiles" / "full.yaml").rules[0]
    udev = {"ID_PATH": "pci-0000:3b:00.0", "ID_NET_DRIVER": "ixgbe"}
    assert matches(rule.selector, Facts("eth0", mac="AA:BB:CC:01:02:03", udev=udev))
    assert not matches(rule.selector, Facts("eth9", mac="aa:bb:cc:01:02:03", udev=udev))
    assert not matches(rule.selector, Facts("ens1", driver_name="e1000e", udev=udev))
