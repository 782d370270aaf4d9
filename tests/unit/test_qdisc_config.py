"""Profile YAML for tc QoS: units, the desired tree it builds, and every problem reported at
its file, line and key path with what was expected."""

from __future__ import annotations

import textwrap

import pytest

from nodenetd.config import qos
from nodenetd.config.loader import load_profile
from nodenetd.config.yamlload import load_text
from nodenetd.errors import ConfigError


def profile(tmp_path, text: str):
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text))
    return load_profile(path)


def issues(tmp_path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        profile(tmp_path, text)
    return [str(issue).replace(f"{tmp_path}/", "") for issue in caught.value.issues]


# -- units -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text,rate", [("50mbit", 6_250_000), ("1gbit", 125_000_000),
                                       ("800kbit", 100_000), ("1.5mbit", 187_500),
                                       ("10Gbit", 1_250_000_000)])
def test_rates_are_bits_per_second(text, rate):
    assert qos.parse_rate(text) == rate


@pytest.mark.parametrize("bad", ["50", 50, "50mbps", "fast", "0bit"])
def test_rates_need_a_bit_unit(bad):
    with pytest.raises(ValueError):
        qos.parse_rate(bad)


def test_sizes_and_times():
    assert qos.parse_size("64kb") == 65536 and qos.parse_size(1514) == 1514
    assert qos.parse_size("1mb") == 1 << 20
    assert qos.parse_time("10s") == 10_000_000 and qos.parse_time("5ms") == 5000
    assert qos.parse_time("100us") == 100
    with pytest.raises(ValueError):
        qos.parse_time("10")


# -- the desired tree ------------------------------------------------------------------------


def test_the_common_case_is_short(tmp_path):
    rule = profile(tmp_path, """\
        interfaces:
          - name: uplinks
            match: {name: ["eth*"]}
            qdisc:
              htb:
                rate: 1gbit
                default: bulk
                classes:
                  voice: {share: 20%, ceil: 100%, priority: 0, dscp: [ef, cs5]}
                  bulk: {share: 80%, dscp: [af11, 0]}
            ingress: {police: {rate: 100mbit, burst: 1mb}}
        """).rules[0]
    root = rule.settings["qdisc"]["root"]
    assert root.origin.position.line == 4
    tree = root.value
    assert tree["kind"] == "htb" and tree["options"] == {"default": 0x20, "r2q": 10}
    by_name = {c["name"]: c for c in tree["classes"]}
    assert by_name["(all)"] == {"minor": 1, "parent": 0, "name": "(all)", "rate": 125_000_000,
                                "ceil": 125_000_000, "burst": 125_000, "cburst": 125_000,
                                "prio": 0, "quantum": 200_000}
    assert by_name["voice"]["minor"] == 0x10 and by_name["voice"]["rate"] == 25_000_000
    assert by_name["bulk"]["minor"] == 0x20 and by_name["bulk"]["ceil"] == 125_000_000
    assert [(f["prio"], f["protocol"], f["match"], f["flowid"]) for f in tree["filters"]] == [
        (1, "ip", {"dscp": 46}, 0x10), (1, "ip", {"dscp": 40}, 0x10),
        (1, "ip", {"dscp": 10}, 0x20), (1, "ip", {"dscp": 0}, 0x20),
        (2, "ipv6", {"dscp": 46}, 0x10), (2, "ipv6", {"dscp": 40}, 0x10),
        (2, "ipv6", {"dscp": 10}, 0x20), (2, "ipv6", {"dscp": 0}, 0x20)]
    assert rule.settings["qdisc"]["ingress"].value == {
        "kind": "ingress", "police": {"rate": 12_500_000, "burst": 1 << 20,
                                      "mtu": qos.UNLIMITED}}


def test_explicit_filters_come_first_per_family():
    tree = qos.build_qdisc(load_text(textwrap.dedent("""\
        htb:
          rate: 100mbit
          default: b
          classes: {a: {share: 50%, dscp: [ef]}, b: {share: 50%}}
          filters:
            - {match: {protocol: udp, dport: 5060}, class: a}
            - {match: {mark: "0x10/0xff"}, class: b}
            - {match: {protocol: icmp}, class: a}
        """), "x.yaml"))
    assert [(f["prio"], f["protocol"], f.get("match"), f.get("mark")) for f in
            tree["filters"]] == [
        (1, "ip", {"ipproto": 17, "dport": 5060}, None),
        (2, "ipv6", {"ipproto": 17, "dport": 5060}, None),
        (3, "all", {}, [0x10, 0xFF]),
        (4, "ip", {"ipproto": 1}, None),
        (5, "ip", {"dscp": 46}, None),
        (6, "ipv6", {"dscp": 46}, None)]


@pytest.mark.parametrize("yaml,expected", [
    ("default", {"kind": "default", "default": True}),
    ("fq", {"kind": "fq", "options": {}}),
    ("{fq: {flow_limit: 100, buckets: 1024, horizon: 10s, pacing: true, maxrate: 10gbit}}",
     {"kind": "fq", "options": {"flow_limit": 100, "buckets": 1024, "horizon": 10_000_000,
                                "pacing": True, "maxrate": 1_250_000_000}}),
    ("{fq_codel: {target: 5ms, interval: 100ms, limit: 10240}}",
     {"kind": "fq_codel", "options": {"target": 5000, "interval": 100_000, "limit": 10240}}),
    ("{cake: {bandwidth: 1gbit, diffserv: diffserv4, ack_filter: true}}",
     {"kind": "cake", "options": {"bandwidth": 125_000_000, "diffserv": "diffserv4",
                                  "ack_filter": "filter"}}),
    ("mq", {"kind": "mq", "child": {"kind": "default", "default": True}}),
    ("{mq: {child: fq}}", {"kind": "mq", "child": {"kind": "fq", "options": {}}}),
    ("{mq: {child: {fq: {horizon: 2s}}}}",
     {"kind": "mq", "child": {"kind": "fq", "options": {"horizon": 2_000_000}}}),
    ("{tbf: {rate: 50mbit, burst: 64kb, latency: 50ms}}",
     {"kind": "tbf", "options": {"rate": 6_250_000, "burst": 65536, "limit": 378_036}}),
    ("{tbf: {rate: 50mbit, burst: 64kb, limit: 100kb}}",
     {"kind": "tbf", "options": {"rate": 6_250_000, "burst": 65536, "limit": 102_400}}),
])
def test_each_kind_builds_its_tree(yaml, expected):
    assert qos.build_qdisc(load_text(f"q: {yaml}\n", "x.yaml")["q"]) == expected


def test_override_names_the_owner(tmp_path):
    rule = profile(tmp_path, """\
        interfaces:
          - qdisc: {mq: {child: fq}, override: cni-bandwidth-manager}
        """).rules[0]
    assert rule.settings["qdisc"]["root"].override == "cni-bandwidth-manager"


# -- problems, at their line -----------------------------------------------------------------


def test_htb_problems_each_at_its_line(tmp_path):
    found = issues(tmp_path, """\
        interfaces:
          - qdisc:
              htb:
                rate: 100mbit
                default: bluk
                classes:
                  voice: {share: 30%, ceil: 10%, dscp: [eff, cs5]}
                  bulk: {share: 80%, dscp: [af11, cs5]}
                filters:
                  - {match: {dport: 5060}, class: voice}
                  - {match: {protocol: tcp}, class: nope}
        """)
    assert found == [
        "p.yaml:5: interfaces[0].qdisc.htb.default: no class 'bluk' to send unclassified "
        "traffic to (expected one of the classes: voice, bulk); did you mean 'bulk'?",
        "p.yaml:6: interfaces[0].qdisc.htb.classes: the class shares add up to 110% of the htb "
        "rate (expected shares that add up to at most 100%)",
        "p.yaml:7: interfaces[0].qdisc.htb.classes.voice.ceil: ceil '10%' is below the share "
        "'30%' (expected a ceil at least the class's share)",
        "p.yaml:7: interfaces[0].qdisc.htb.classes.voice.dscp[0]: unknown DSCP 'eff' (expected "
        "a DSCP name (ef, af41, cs5, le...) or a number from 0 to 63); did you mean 'ef'?",
        "p.yaml:8: interfaces[0].qdisc.htb.classes.bulk.dscp[1]: DSCP cs5 is already given to "
        "class 'voice' (expected each DSCP value in one class)",
        "p.yaml:10: interfaces[0].qdisc.htb.filters[0].match: a port match needs the protocol "
        "it is a port of (expected protocol: tcp, udp or sctp next to sport/dport)",
        "p.yaml:11: interfaces[0].qdisc.htb.filters[1].class: no class 'nope' (expected one of "
        "the classes: voice, bulk)",
    ]


def test_schema_problems(tmp_path):
    found = issues(tmp_path, """\
        interfaces:
          - qdisc: {fqq: {}}
          - qdisc: {tbf: {rate: 50mbit}}
          - qdisc: {fq: {buckets: 1000, horizon: 10}}
          - qdisc: {fq: {}, fq_codel: {}}
          - ingress: {police: {rate: 100mbit, burst: 100}}
          - qdisc: {htb: {rate: 1gbits, default: a, classes: {a: {share: 10%}}}}
        """)
    assert found == [
        "p.yaml:2: interfaces[0].qdisc.fqq: unknown key (expected one of: fq, fq_codel, cake, "
        "mq, tbf, htb, override); did you mean 'fq'?",
        "p.yaml:3: interfaces[1].qdisc.tbf.burst: missing required key (expected a size such "
        "as 64kb)",
        "p.yaml:4: interfaces[2].qdisc.fq.buckets: 1000 buckets is not a power of two from 2 to "
        "262144 (expected a power of two (fq keeps the log2)); did you mean 1024?",
        "p.yaml:4: interfaces[2].qdisc.fq.horizon: invalid value 10 (expected a time such as "
        "5ms)",
        "p.yaml:5: interfaces[3].qdisc.fq_codel: a second qdisc kind (fq, fq_codel) (expected "
        "one root qdisc kind per rule)",
        "p.yaml:6: interfaces[4].ingress.police.burst: burst 100 is smaller than one full-size "
        "packet (expected at least 1514 bytes; with GRO, at least 64kb (a packet larger than "
        "the burst is always dropped))",
        "p.yaml:7: interfaces[5].qdisc.htb.rate: invalid rate '1gbits' (expected a rate such as "
        "50mbit, 1gbit or 800kbit)",
    ]


def test_builtin_and_example_profiles_still_load():
    from nodenetd.config.loader import ProfileLibrary, builtin_profile_dir

    library = ProfileLibrary([builtin_profile_dir()])
    for name in library.names():
        library.load(name)
