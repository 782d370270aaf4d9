"""The node config's failover section: what it becomes (typed groups, the tuning settings it
adds), and every likely mistake reported at its file and line with what was expected."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from nodenetd.config import loader
from nodenetd.config.failover import tuning_rules
from nodenetd.config.loader import ProfileLibrary, load_node_config, validate_files
from nodenetd.config.model import SysctlValue
from nodenetd.config.resolve import resolve
from nodenetd.health.targets import Combine

HEAD = "profiles: [base]\nprofile_dirs: [profiles]\nfailover:\n  groups:\n"  # 4 lines

ROUTE_GROUP = """\
- name: uplinks
  type: route
  routes: [default, 10.0.0.0/8]
  interval: 0.01
  rise: 2
  combine: {quorum: 2}
  members:
    - interface: eth0
      priority: 100
      gateway: 192.0.2.1
      gateway6: fe80::1
      probes: [{icmp: 203.0.113.1}, {arp: 192.0.2.1, interval: 0.1}, {ns: "fe80::1"}]
    - interface: eth1
      gateway: 198.51.100.1
      fall: 5
      combine: any
      probes: [{icmp: 203.0.113.1}]
"""

BOND_GROUP = """\
- name: bond0
  type: bond
  bond: bond0
  options: {miimon: 100, num_grat_arp: 2, arp_ip_target: []}
  damping: false
  members:
    - {interface: eth2, priority: 10, probes: [{arp: 192.0.2.1}]}
    - {interface: eth3, probes: [{arp: 192.0.2.1}]}
"""


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "base.yaml").write_text("description: the one good profile\n")
    monkeypatch.setattr(loader, "builtin_profile_dir", lambda: tmp_path / "no-builtin")
    return tmp_path


def node_config(workspace: Path, *groups: str) -> Path:
    path = workspace / "nodenetd.yaml"
    body = "".join(textwrap.indent(group, "    ") for group in groups)
    path.write_text(HEAD + body)
    return path


def test_groups_become_typed_with_group_defaults_and_member_overrides(workspace):
    node = load_node_config(node_config(workspace, ROUTE_GROUP, BOND_GROUP))

    uplinks, bond = node.failover.groups
    eth0, eth1 = uplinks.members
    assert uplinks.type == "route" and uplinks.metric == 50 and uplinks.table == 254
    assert uplinks.routes == (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"),
                              ipaddress.ip_network("10.0.0.0/8"))
    assert (eth0.table, eth1.table) == (1000, 1001)
    assert [(p.kind, p.target, p.interval) for p in eth0.probes] == [
        ("icmp", "203.0.113.1", 0.01), ("arp", "192.0.2.1", 0.1), ("ns", "fe80::1", 0.01)]
    assert (eth0.rise, eth0.fall, eth0.combine) == (2, 3, Combine.quorum(2))
    assert (eth1.rise, eth1.fall, eth1.combine) == (2, 5, Combine("any"))
    assert eth1.gateway6 is None and str(eth0.gateway6) == "fe80::1"
    assert uplinks.position is not None and uplinks.position.line == 5
    assert bond.bond == "bond0" and bond.damping is None
    assert bond.bond_options.given() == {"miimon": 100, "num_peer_notif": 2,
                                         "arp_ip_target": ()}


def test_groups_add_the_settings_they_need_as_tuning_rules_before_the_overrides(workspace):
    node = load_node_config(node_config(workspace, ROUTE_GROUP, BOND_GROUP))
    resolved = resolve(node, ProfileLibrary.for_node(node))

    rules = {(tuple(r.selector.names), kind): {k: w.value for k, w in keys.items()}
             for r in tuning_rules(node.failover) for kind, keys in r.settings.items()}
    one = SysctlValue("=", (1,))
    assert rules[(("eth0",), "sysctl")] == {
        "net.ipv4.conf.IF.ignore_routes_with_linkdown": one,
        "net.ipv6.conf.IF.ignore_routes_with_linkdown": one}
    assert rules[(("eth1",), "sysctl")] == {"net.ipv4.conf.IF.ignore_routes_with_linkdown": one}
    assert rules[(("bond0",), "bond")] == {"primary_reselect": "failure", "miimon": 100,
                                           "num_peer_notif": 2, "arp_ip_target": ()}
    assert rules[(("eth2",), "bond_slave")] == {"prio": 10}
    assert rules[(("eth3",), "bond_slave")] == {"prio": 0}
    origins = {str(r.origin) for r in resolved.rules}
    assert any("profile failover, rule group uplinks" in o and "nodenetd.yaml:5" in o
               for o in origins)


def test_an_interface_name_with_glob_characters_matches_only_itself(workspace):
    group = ROUTE_GROUP.replace("interface: eth1", "interface: 'eth[1]'")
    node = load_node_config(node_config(workspace, group))
    (_, eth1) = tuning_rules(node.failover)
    assert eth1.selector.names == ("eth[[]1]",)


# fmt: off
CASES = [
    # (id, replace this, with this, line, key path, says)
    ("unknown member key", "      fall: 5", "      fal: 5", 19,
     "failover.groups[0].members[1].fal", "did you mean 'fall'?"),
    ("unknown group type", "type: route", "type: ecmp", 6, "failover.groups[0].type",
     "expected one of: bond, route"),
    ("interval below 10 ms", "interval: 0.01", "interval: 0.001", 8,
     "failover.groups[0].interval", "out of range"),
    ("two kinds in one probe", "{ns: \"fe80::1\"}", "{ns: \"fe80::1\", arp: 192.0.2.9}", 16,
     "failover.groups[0].members[0].probes[2]", "exactly one target kind (found ns, arp)"),
    ("probe family mismatch", "{icmp: 203.0.113.1}, {arp", "{icmp6: 203.0.113.1}, {arp", 16,
     "failover.groups[0].members[0].probes[0].icmp6", "is not an IPv6 address"),
    ("gateway of the wrong family", "gateway6: fe80::1", "gateway6: 192.0.2.7", 15,
     "failover.groups[0].members[0].gateway6", "is not an IPv6 address"),
    ("a prefix without gateways", "10.0.0.0/8]", "10.0.0.0/8, 2001:db8::/32]", 7,
     "failover.groups[0].routes[2]", "needs a gateway6 on every member; missing on eth1"),
    ("a prefix with host bits", "10.0.0.0/8]", "10.0.0.1/8]", 7,
     "failover.groups[0].routes[1]", "is not a prefix"),
    ("quorum above the probes", "combine: any", "combine: {quorum: 2}", 20,
     "failover.groups[0].members[1].combine", "quorum 2 cannot be met by 1 probe(s) of eth1"),
    ("bond key in a route group", "  interval: 0.01", "  bond: bond9\n  interval: 0.01", 8,
     "failover.groups[0].bond", "'bond' belongs to bond groups"),
    ("member table reserved", "      gateway: 198.51.100.1", "      gateway: 198.51.100.1\n"
     "      table: 254", 19, "failover.groups[0].members[1].table", "table 254 is reserved"),
]
BOND_CASES = [
    ("miimon with the ARP monitor", "miimon: 100,", "miimon: 100, arp_interval: 100,", 8,
     "failover.groups[0].options.arp_interval", "exclude each other"),
    ("primary not a member", "miimon: 100,", "miimon: 100, primary: eth9,", 8,
     "failover.groups[0].options.primary", "primary eth9 is not a member"),
    ("damping out of order", "damping: false", "damping: {reuse: 3000}", 9,
     "failover.groups[0].damping", "reuse 3000.0 must be below suppress 2000.0"),
    ("route key in a bond group", "damping: false", "damping: false\n  metric: 10", 10,
     "failover.groups[0].metric", "'metric' belongs to route groups"),
    ("bond group without its bond", "  bond: bond0\n", "", 5, "failover.groups[0]",
     "a bond group needs 'bond'"),
]
# fmt: on


@pytest.mark.parametrize(("group", "case"), [(ROUTE_GROUP, c) for c in CASES]
                         + [(BOND_GROUP, c) for c in BOND_CASES],
                         ids=[c[0] for c in CASES + BOND_CASES])
def test_mistakes_are_reported_at_their_line(workspace, group, case):
    _id, old, new, line, key_path, says = case
    assert old in group
    path = node_config(workspace, group.replace(old, new, 1))

    issues = validate_files([path], search_dirs=[])

    assert len(issues) == 1, "\n".join(map(str, issues))
    (issue,) = issues
    assert (issue.position.file, issue.position.line) == (str(path), line), str(issue)
    assert issue.key_path == key_path
    assert says in str(issue)


def test_groups_and_members_must_not_collide(workspace):
    twin = ROUTE_GROUP.replace("eth0", "eth2")
    path = node_config(workspace, ROUTE_GROUP, BOND_GROUP, twin)

    issues = [str(i) for i in validate_files([path], search_dirs=[])]

    assert any(":30: failover.groups[2].name: group name 'uplinks' is used twice" in i
               for i in issues), issues
    assert any("failover.groups[2].members[0].interface: eth2 is already a member of group "
               "bond0" in i for i in issues), issues
