"""Bad inputs: each is rejected with the file, line, key path, what was expected and, for a
misspelling, the closest valid name. One row per mistake a person is likely to make."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from nodenetd.config import loader
from nodenetd.config.loader import (
    ProfileLibrary,
    load_node_config,
    load_profile,
    validate_files,
)
from nodenetd.config.resolve import resolve, resolve_profiles
from nodenetd.errors import ConfigError, ConfigIssue


@dataclass(frozen=True)
class Bad:
    id: str
    text: str
    line: int
    key_path: str
    says: str  # a distinctive part of the message
    hint: str | None = None  # the whole hint, when there is one worth pinning
    node: bool = False  # a node config (written as nodenetd.yaml next to profiles/)


def rule(body: str) -> str:
    """A profile whose only rule has ``body`` (rule keys start on line 2)."""
    return "interfaces:\n  - " + textwrap.indent(textwrap.dedent(body).strip(), "    ")[4:] + "\n"


# One row per mistake reads better than one argument per line.
# fmt: off
CASES = [
    # --- structure: keys, types, ranges, enums (JSON Schema)
    Bad("top-level key misspelled", "descripton: x\n", 1, "descripton", "unknown key",
        "did you mean 'description'?"),
    Bad("rule key misspelled", rule("mtu: 1500\nsysctl: {}"), 3, "interfaces[0].sysctl",
        "unknown key in interface rule", "did you mean 'sysctls'?"),
    Bad("feature misspelled", rule("features: {groo: true}"), 2, "interfaces[0].features.groo",
        "unknown feature (expected a kernel feature name or ethtool alias)",
        "did you mean 'gro'?"),
    Bad("kernel feature misspelled", rule("features:\n  rx-gro-hww: false"), 3,
        "interfaces[0].features.rx-gro-hww", "unknown feature", "did you mean 'rx-gro-hw'?"),
    Bad("feature value is a quoted string", rule('features: {gro: "yes"}'), 2,
        "interfaces[0].features.gro", "invalid value 'yes' (expected true or false)"),
    Bad("mtu is not a number", rule("mtu: big"), 2, "interfaces[0].mtu",
        "invalid value 'big' (expected an integer from 68 to 65535)"),
    Bad("mtu is a float", rule("mtu: 9000.0"), 2, "interfaces[0].mtu", "invalid value 9000.0"),
    Bad("mtu out of range", rule("mtu: 70000"), 2, "interfaces[0].mtu",
        "70000 is out of range (expected an integer from 68 to 65535)"),
    Bad("mtu below the IPv4 minimum", rule("name: tiny\nmtu: 67"), 3, "interfaces[0].mtu",
        "67 is out of range"),
    Bad("negative txqueuelen", rule("txqueuelen: -1"), 2, "interfaces[0].txqueuelen",
        "-1 is out of range (expected an integer >= 0)"),
    Bad("state sideways", rule("state: sideways"), 2, "interfaces[0].state",
        "invalid value 'sideways' (expected one of: up, down)"),
    Bad("channels maxx", rule("channels: {combined: maxx}"), 2,
        "interfaces[0].channels.combined", "expected an integer >= 1 or 'max'",
        "did you mean 'max'?"),
    Bad("zero ring entries", rule("rings:\n  rx: 0"), 3, "interfaces[0].rings.rx",
        "invalid value 0 (expected an integer >= 1 or 'max')"),
    Bad("ring key misspelled", rule("rings: {rx-jumbos: 10}"), 2,
        "interfaces[0].rings.rx-jumbos", "unknown ring parameter", "did you mean 'rx-jumbo'?"),
    Bad("coalesce key misspelled", rule("coalesce: {rx-usec: 50}"), 2,
        "interfaces[0].coalesce.rx-usec", "unknown coalesce parameter",
        "did you mean 'rx-usecs'?"),
    Bad("coalesce boolean given a number", rule("coalesce: {adaptive-rx: 5}"), 2,
        "interfaces[0].coalesce.adaptive-rx", "invalid value 5 (expected true or false)"),
    Bad("unknown kind", rule("match: {kind: physicall}"), 2, "interfaces[0].match.kind",
        "invalid value 'physicall' (expected one of: physical, veth,",
        "did you mean 'physical'?"),
    Bad("unknown kind in a list", rule("match:\n  kind: [physical, vth]"), 3,
        "interfaces[0].match.kind[1]", "invalid value 'vth'", "did you mean 'veth'?"),
    Bad("selector field misspelled", rule("match: {drivers: ixgbe}"), 2,
        "interfaces[0].match.drivers", "unknown selector field", "did you mean 'driver'?"),
    Bad("interfaces is a mapping", "interfaces:\n  eth0: {mtu: 9000}\n", 1, "interfaces",
        "wrong type: a mapping (expected a list of interface rules)"),
    # --- sysctls (semantic checks)
    Bad("boolean sysctl", "sysctls:\n  net.ipv4.ip_forward: on\n", 2,
        "sysctls.net.ipv4.ip_forward", "true is a boolean, not a sysctl value", "write 0 or 1"),
    Bad("floor on a text value", 'sysctls:\n  net.ipv4.tcp_congestion_control: ">=bbr"\n', 2,
        "sysctls.net.ipv4.tcp_congestion_control",
        "a floor (>=) needs integer fields, but 'bbr' is not an integer"),
    Bad("ceiling on a mixed value", 'sysctls:\n  net.ipv4.tcp_rmem: "<=4096 lots"\n', 2,
        "sysctls.net.ipv4.tcp_rmem", "a ceiling (<=) needs integer fields"),
    Bad("reversed operator", 'sysctls:\n  net.core.somaxconn: "=>4096"\n', 2,
        "sysctls.net.core.somaxconn", "unknown operator", "did you mean '>='?"),
    Bad("multi-field sysctl as a list", "sysctls:\n  net.ipv4.tcp_rmem: [4096, 131072]\n", 2,
        "sysctls.net.ipv4.tcp_rmem", "a list is not a sysctl value",
        'write several fields as one string: "4096 131072 16777216"'),
    Bad("IF key in global sysctls", "sysctls:\n  net.ipv4.conf.IF.rp_filter: 1\n", 2,
        "sysctls.net.ipv4.conf.IF.rp_filter", "the IF placeholder only works in an interface rule"),
    Bad("interface sysctl without IF", rule("sysctls:\n  net.ipv4.conf.eth0.rp_filter: 2"), 3,
        "interfaces[0].sysctls.net.ipv4.conf.eth0.rp_filter",
        "per-interface sysctl keys must use the IF placeholder",
        "did you mean 'net.ipv4.conf.IF.rp_filter'?"),
    Bad("global sysctl in an interface rule", rule("sysctls:\n  net.core.somaxconn: 1"), 3,
        "interfaces[0].sysctls.net.core.somaxconn", "not a per-interface sysctl"),
    Bad("slash-form sysctl key", "sysctls:\n  net/ipv4/ip_forward: 1\n", 2,
        "sysctls.net/ipv4/ip_forward", "sysctl keys use dots, not slashes",
        "write 'net.ipv4.ip_forward'"),
    Bad("/proc/sys path as a key", "sysctls:\n  /proc/sys/net/core/somaxconn: 1\n", 2,
        "sysctls./proc/sys/net/core/somaxconn", "use dots", "write 'net.core.somaxconn'"),
    Bad("nothing after IF", rule("sysctls:\n  net.ipv4.conf.IF: 1"), 3,
        "interfaces[0].sysctls.net.ipv4.conf.IF", "missing the setting after IF"),
    Bad("single-segment sysctl key", "sysctls:\n  somaxconn: 4096\n", 2,
        "sysctls.somaxconn", "invalid sysctl key"),
    # --- selectors and features (semantic checks)
    Bad("conflicting alias and kernel feature",
        rule("features:\n  gso: true\n  tx-generic-segmentation: false"), 4,
        "interfaces[0].features.tx-generic-segmentation",
        "conflicts with 'gso: true' at line 3 (expected one value per feature; "
        "both set tx-generic-segmentation)"),
    Bad("alias covering a conflicting kernel feature",
        rule("features:\n  tx-tcp6-segmentation: false\n  tso: true"), 4,
        "interfaces[0].features.tso", "conflicts with 'tx-tcp6-segmentation: false' at line 3"),
    Bad("unclosed character class", rule("match:\n  name: [eth0, 'eth[0-3']"), 3,
        "interfaces[0].match.name[1]", "unclosed '['"),
    Bad("name glob with a space", rule("match: {exclude: 'eth 0'}"), 2,
        "interfaces[0].match.exclude", "'eth 0' can never match"),
    Bad("not a MAC glob", rule("match: {mac: 'zz:yy:*'}"), 2, "interfaces[0].match.mac",
        "is not a MAC address glob"),
    # --- profile references (resolution)
    Bad("unknown profile in extends", "description: x\nextends: [bsae]\n", 2, "extends[0]",
        "unknown profile 'bsae'", "did you mean 'base'?"),
    Bad("profile extends itself", "extends: case\n", 1, "extends", "extends cycle: case -> case"),
    Bad("path in extends", "extends: [../base]\n", 1, "extends[0]",
        "invalid value '../base' (expected a profile name)"),
    # --- YAML itself
    Bad("duplicate YAML key", rule("mtu: 1500\nstate: up\nmtu: 9000"), 4, "interfaces[0].mtu",
        "duplicate key 'mtu' (first set at line 2)"),
    Bad("YAML syntax error", "sysctls:\n  net.core.somaxconn: [1\n  x: 2\n", 3, "",
        "invalid YAML: did not find expected ',' or ']'"),
    Bad("empty file", "# nothing here yet\n", 1, "", "file is empty"),
    Bad("top level is a list", "- eth0\n", 1, "", "the top level is a list"),
    # --- node config
    Bad("node config without profiles", "# node\nstate_dir: /var/lib/x\n", 2, "profiles",
        "missing required key (expected a profile name; or a list of them)", node=True),
    Bad("node config with an empty profile list", "profiles: []\n", 1, "profiles",
        "must not be empty (expected a list of profile names)", node=True),
    Bad("node key in a profile", "# profile or node?\nprofile: [base]\ninterfaces: []\n", 2,
        "profile", "unknown key (expected one of: description, extends, sysctls, interfaces)",
        "did you mean 'profiles'? (that key belongs in a node config)"),
    Bad("node key misspelled", "profiles: [base]\nstate_dri: /x\n", 2, "state_dri",
        "unknown key", "did you mean 'state_dir'?", node=True),
    Bad("unknown profile in node profiles", "profile_dirs: [profiles]\nprofiles: [bsae]\n", 2,
        "profiles[0]", "unknown profile 'bsae' (expected a bsae.yaml in", "did you mean 'base'?",
        node=True),
    Bad("profile body at the top of a node config", "profiles: [base]\nsysctls: {}\n", 2,
        "sysctls", "unknown key", "node-local sysctls go under overrides:", node=True),
    Bad("relative state_dir", "profiles: [base]\nstate_dir: var/lib/x\n", 2, "state_dir",
        "invalid value 'var/lib/x' (expected an absolute path)", node=True),
    Bad("unknown daemon setting", "profiles: [base]\ndaemon:\n  socket: /run/x\n", 3,
        "daemon.socket", "unknown daemon setting (expected one of mode, on_stop", node=True),
    Bad("daemon mode", "profiles: [base]\ndaemon:\n  mode: fix\n", 3,
        "daemon.mode", "'fix'", node=True),
    Bad("overrides key misspelled", "profiles: [base]\noverrides:\n  interface: []\n", 3,
        "overrides.interface", "unknown key in overrides", "did you mean 'interfaces'?",
        node=True),
    Bad("bad value in overrides",
        "profiles: [base]\noverrides:\n  interfaces:\n    - mtu: 10\n", 4,
        "overrides.interfaces[0].mtu", "10 is out of range", node=True),
    Bad("boolean sysctl in overrides",
        "profiles: [base]\noverrides:\n  sysctls:\n    net.ipv4.ip_forward: yes\n", 4,
        "overrides.sysctls.net.ipv4.ip_forward", "is a boolean", "write 0 or 1", node=True),
]
# fmt: on


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """tmp/profiles/base.yaml is valid; the built-in dir is empty so nothing else is found."""
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "base.yaml").write_text("description: the one good profile\n")
    monkeypatch.setattr(loader, "builtin_profile_dir", lambda: tmp_path / "no-builtin")
    return tmp_path


def write(workspace: Path, case: Bad) -> Path:
    """The case's file; a node config gets ``profile_dirs: [profiles]`` appended (after the
    lines the case counts) unless it says where to look itself."""
    if not case.node:
        path = workspace / "profiles" / "case.yaml"
        path.write_text(case.text)
        return path
    path = workspace / "nodenetd.yaml"
    text = case.text if "profile_dirs" in case.text else case.text + "profile_dirs: [profiles]\n"
    path.write_text(text)
    return path


def load_strictly(path: Path, case: Bad) -> None:
    """What the daemon does: load, then resolve; raises ConfigError."""
    if case.node:
        node = load_node_config(path)
        resolve(node, ProfileLibrary.for_node(node))
    else:
        resolve_profiles([load_profile(path)], ProfileLibrary([path.parent]))


def test_the_table_is_big_enough_and_ids_are_unique():
    assert len(CASES) >= 20
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_reported_where_it_is(workspace, case):
    path = write(workspace, case)
    issues = validate_files([path], search_dirs=[])
    assert len(issues) == 1, "\n".join(str(i) for i in issues)
    (issue,) = issues
    assert isinstance(issue, ConfigIssue)
    assert issue.position is not None
    assert (issue.position.file, issue.position.line) == (str(path), case.line)
    assert issue.key_path == case.key_path
    assert case.says in str(issue)
    if case.hint is not None:
        assert issue.hint == case.hint
    assert str(issue).startswith(f"{path}:{case.line}: ")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_loading_raises_the_same_issue(workspace, case):
    path = write(workspace, case)
    with pytest.raises(ConfigError) as excinfo:
        load_strictly(path, case)
    assert [str(i) for i in excinfo.value.issues] == [
        str(i) for i in validate_files([path], search_dirs=[])
    ]
