"""tc QoS on the host kernel, in namespaces: htb, tbf, mq and ingress policing applied,
read back with ``tc -j`` and with nodenetd's own reader, re-planned as a no-op that touches
nothing (``tc monitor`` stays silent), changed in place, restored; and traffic through the
shapers measured with iperf3.

The host kernel has htb, tbf, mq, ingress and the u32 classifier, but no fq, fq_codel, cake
or police action: those run in the kernel lab (tests/kernel/test_qdisc_lab.py). Where a
test meets a kernel feature that may be missing (act_police, u32 mark matching), it checks
the path this kernel takes: applied, or skipped with the reason and nothing left behind.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from nodenetd.kernel.tc import TC_H_ROOT
from tests.lab.netns import require_tools
from tests.lab.tc import Monitor, classes, qdiscs, reader, root, u32_nodes

pytestmark = pytest.mark.root

TBF = """\
interfaces:
  - name: shaped
    match: {name: ["lab*"]}
    qdisc: {tbf: {rate: RATE, burst: 64kb, latency: 50ms}}
"""

HTB = """\
interfaces:
  - name: qos
    match: {name: ["lab*"]}
    qdisc:
      htb:
        rate: 50mbit
        default: low
        classes:
          high: {share: HIGH, priority: 0, dscp: [af41, ef]}
          low: {share: 20%}
        filters:
          - {match: {protocol: udp, dport: 5060}, class: high}
"""


def apply(node) -> dict:
    return node.ctl_json("apply")


def replan_is_empty(node) -> None:
    plan = node.ctl("plan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "Nothing to change" in plan.stdout


# --------------------------------------------------------------------------------------------
# tbf


def test_tbf_applied_read_back_noop_changed_in_place_restored(node):
    node.nics(1)
    node.write_profile("q", TBF.replace("RATE", "50mbit"))
    node.write_config(["q"])
    assert root(node)["kind"] == "noqueue" and root(node)["handle"] == "0:"

    plan = node.ctl("plan")
    assert "qdisc.root" in plan.stdout and "noqueue(default)" in plan.stdout
    assert "tbf rate 50mbit burst 64kb" in plan.stdout
    assert node.ctl("apply").returncode == 0

    tbf = root(node)
    assert tbf["kind"] == "tbf" and tbf["options"]["rate"] == 6_250_000
    assert 65500 <= tbf["options"]["burst"] <= 65536  # tc's float conversion of the ticks
    with reader(node) as api:
        ours = next(q for q in api.dump_qdiscs() if q.parent == TC_H_ROOT
                    and q.ifindex == node.ns.link("lab0")["ifindex"])
    assert ours.kind == "tbf" and ours.options["rate"] == 6_250_000
    assert ours.options["burst"] == 65536 and ours.options["limit"] == 65536 + 312_500
    assert node.journal["originals"]["qdisc/lab0/root"]["value"] == {
        "kind": "noqueue", "default": True}

    node.ns.run("ip", "addr", "add", "192.0.2.1/24", "dev", "lab0")
    node.ns.run("ping", "-c", "3", "-i", "0.2", "192.0.2.9", check=False)  # ARP goes out
    sent = root(node)["bytes"]
    assert sent > 0

    monitor = Monitor(node)
    replan_is_empty(node)
    assert apply(node)["applied"] == []
    assert monitor.stop() == ""  # a no-op plan and apply touched nothing
    assert root(node)["handle"] == tbf["handle"] and root(node)["bytes"] >= sent

    node.write_profile("q", TBF.replace("RATE", "40mbit"))
    monitor = Monitor(node)
    assert node.ctl("apply").returncode == 0
    events = monitor.stop()
    changed = root(node)
    assert changed["options"]["rate"] == 5_000_000
    assert changed["handle"] == tbf["handle"]  # changed in place: the same qdisc...
    assert changed["bytes"] >= sent  # ...with its statistics (a new one starts at 0)
    assert "deleted" not in events
    assert node.journal["originals"]["qdisc/lab0/root"]["value"]["kind"] == "noqueue"

    assert node.ctl("restore").returncode == 0
    assert root(node)["kind"] == "noqueue" and root(node)["handle"] == "0:"
    assert node.journal["originals"] == {}


# --------------------------------------------------------------------------------------------
# htb


def test_htb_classes_and_filters_read_back_noop_in_place_restored(node):
    node.nics(1)
    node.write_profile("q", HTB.replace("HIGH", "80%"))
    node.write_config(["q"])
    assert node.ctl("apply").returncode == 0

    htb = root(node)
    assert htb["kind"] == "htb" and htb["options"]["default"] == "0x20"
    major = htb["handle"]
    found = classes(node)
    assert set(found) == {f"{major}1", f"{major}10", f"{major}20"}
    assert found[f"{major}1"]["rate"] == 6_250_000
    assert found[f"{major}10"]["rate"] == 5_000_000 and found[f"{major}10"]["ceil"] == 6_250_000
    assert found[f"{major}20"]["rate"] == 1_250_000
    nodes = u32_nodes(node, parent=major)
    # udp 5060 (IPv4, IPv6), then af41 and ef for IPv4 and IPv6
    assert len(nodes) == 6
    assert {n["options"]["flowid"] for n in nodes} == {f"{major}10"}
    assert {n["protocol"] for n in nodes} == {"ip", "ipv6"}

    ifindex = node.ns.link("lab0")["ifindex"]
    with reader(node) as api:
        ours = {c.classid & 0xFFFF: c.options for c in api.dump_classes(ifindex)}
        filters = api.dump_filters(ifindex, int(major.rstrip(":"), 16) << 16)
    assert ours[0x10]["rate"] == 5_000_000 and ours[0x20]["rate"] == 1_250_000
    assert sorted((f.prio, f.protocol) for f in filters) == [
        (1, "ip"), (2, "ipv6"), (3, "ip"), (3, "ip"), (4, "ipv6"), (4, "ipv6")]

    monitor = Monitor(node)
    replan_is_empty(node)
    assert apply(node)["applied"] == []
    assert monitor.stop() == ""

    # another share: the classes change in place; the qdisc and the filters stay
    node.write_profile("q", HTB.replace("HIGH", "70%"))
    monitor = Monitor(node)
    assert node.ctl("apply").returncode == 0
    events = monitor.stop()
    assert root(node)["handle"] == major
    assert classes(node)[f"{major}10"]["rate"] == 4_375_000
    assert "qdisc" not in events and "filter" not in events
    assert "class htb" in events
    replan_is_empty(node)

    assert node.ctl("restore").returncode == 0
    assert root(node)["kind"] == "noqueue" and root(node)["handle"] == "0:"
    assert classes(node) == {}


def test_htb_default_class_change_builds_a_new_tree(node):
    """htb has no in-place change of its default class: a new htb is grafted, atomically."""
    node.nics(1)
    node.write_profile("q", HTB.replace("HIGH", "80%"))
    node.write_config(["q"])
    assert node.ctl("apply").returncode == 0
    first = root(node)["handle"]
    node.write_profile("q", HTB.replace("HIGH", "80%").replace("default: low", "default: high"))
    assert node.ctl("apply").returncode == 0
    second = root(node)
    assert second["kind"] == "htb" and second["handle"] != first
    assert second["options"]["default"] == "0x10"
    assert len(u32_nodes(node, parent=second["handle"])) == 6
    replan_is_empty(node)
    assert node.ctl("restore").returncode == 0
    assert root(node)["handle"] == "0:"


def test_mark_filter_applied_or_skipped_whole(node):
    """u32 mark matching needs CONFIG_CLS_U32_MARK; a kernel without it takes the attribute
    silently, so nodenetd reads the filter back and skips the whole tree with the reason."""
    node.nics(1)
    node.write_profile("q", HTB.replace("HIGH", "80%").replace(
        "{protocol: udp, dport: 5060}", "{mark: 0x10}"))
    node.write_config(["q"])
    result = apply(node)
    if result["applied"]:
        nodes = u32_nodes(node, parent=root(node)["handle"])
        assert any("mark" in json.dumps(n) for n in nodes)
    else:
        assert "CONFIG_CLS_U32_MARK" in json.dumps(result["skipped"])
        assert root(node)["handle"] == "0:"  # nothing left half-built
        assert "qdisc/lab0/root" not in node.journal["originals"]


# --------------------------------------------------------------------------------------------
# mq, foreign trees, ingress


def test_mq_with_default_children(node):
    node.nics(1, queues=4)
    node.write_profile("q", "interfaces: [{match: {name: lab0}, qdisc: mq}]\n")
    node.write_config(["q"])
    assert node.ctl("apply").returncode == 0
    found = qdiscs(node)
    mq = next(q for q in found if q.get("root"))
    assert mq["kind"] == "mq" and mq["handle"] != "0:"
    assert sorted(q["parent"] for q in found if not q.get("root")) == [
        f"{mq['handle']}{i}" for i in range(1, 5)]
    replan_is_empty(node)
    assert node.ctl("restore").returncode == 0
    assert root(node)["kind"] == "noqueue"


def test_an_interface_never_up_has_no_root_and_gets_none_back(node):
    node.ns.veth("lab0", "labp0", peer_ns=node.switch, up=False)
    assert qdiscs(node) == []  # noop: not even a default qdisc before the first up
    node.write_profile("q", TBF.replace("RATE", "50mbit"))
    node.write_config(["q"])
    assert node.ctl("apply").returncode == 0
    assert root(node)["kind"] == "tbf"
    assert node.journal["originals"]["qdisc/lab0/root"]["value"] == {
        "kind": "noop", "default": True}
    replan_is_empty(node)
    assert node.ctl("restore").returncode == 0
    assert qdiscs(node) == []


def test_foreign_original_is_journaled_and_put_back(node):
    node.nics(1)
    node.ns.run("tc", "qdisc", "replace", "dev", "lab0", "root", "handle", "7:", "pfifo",
                "limit", "77")
    node.write_profile("q", TBF.replace("RATE", "50mbit"))
    node.write_config(["q"])
    assert node.ctl("apply").returncode == 0
    assert root(node)["kind"] == "tbf"
    assert node.journal["originals"]["qdisc/lab0/root"]["value"] == {
        "kind": "pfifo", "options": {"limit": 77}}
    assert node.ctl("restore").returncode == 0
    back = root(node)
    assert back["kind"] == "pfifo" and back["options"]["limit"] == 77


def test_tree_nodenetd_cannot_put_back_is_left_alone(node):
    node.nics(1)
    node.ns.run("tc", "qdisc", "replace", "dev", "lab0", "root", "handle", "1:", "htb")
    node.ns.run("tc", "class", "add", "dev", "lab0", "parent", "1:", "classid", "1:5", "htb",
                "rate", "1mbit")
    node.ns.run("tc", "qdisc", "add", "dev", "lab0", "parent", "1:5", "handle", "5:", "pfifo")
    node.write_profile("q", TBF.replace("RATE", "50mbit"))
    node.write_config(["q"])
    plan = node.ctl_json("plan")
    assert plan["changes"] == []
    (skip,) = plan["skipped"]
    assert "cannot put back" in skip["reason"] and "tc qdisc del dev lab0 root" in skip["reason"]
    assert node.ctl("apply").returncode == 0
    assert root(node)["kind"] == "htb"


def test_ingress_police_applied_or_skipped_cleanly(node):
    node.nics(1)
    node.write_profile("q", """\
interfaces:
  - match: {name: [lab0]}
    ingress: {police: {rate: 100mbit, burst: 1mb}}
""")
    node.write_config(["q"])
    result = apply(node)
    found = {q["kind"] for q in qdiscs(node)}
    if result["applied"]:
        assert "ingress" in found
        (police,) = u32_nodes(node, parent="ffff:")
        assert "police" in json.dumps(police)
        replan_is_empty(node)
        assert node.ctl("restore").returncode == 0
        assert "ingress" not in {q["kind"] for q in qdiscs(node)}
    else:  # this kernel has no act_police: nothing may be left behind
        assert "act_police" in json.dumps(result["skipped"])
        assert "ingress" not in found
        assert node.journal["originals"] == {}


def test_clsact_is_never_touched(node):
    node.nics(1)
    node.ns.run("tc", "qdisc", "add", "dev", "lab0", "clsact")
    node.write_profile("q", """\
interfaces:
  - match: {name: [lab0]}
    ingress: {police: {rate: 100mbit, burst: 1mb}}
""")
    node.write_config(["q"])
    plan = node.ctl_json("plan")
    assert plan["changes"] == [] and "clsact" in plan["skipped"][0]["reason"]
    assert node.ctl("apply").returncode == 0
    assert "clsact" in {q["kind"] for q in qdiscs(node)}


# --------------------------------------------------------------------------------------------
# Traffic: the shaping is real


@pytest.fixture
def wired(node):
    missing = require_tools("iperf3")
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/apt-packages.txt)")
    node.nics(1)
    node.ns.run("ip", "addr", "add", "198.51.100.1/24", "dev", "lab0")
    node.switch.run("ip", "addr", "add", "198.51.100.2/24", "dev", "labp0")
    servers = []

    def server(port: int) -> None:
        servers.append(subprocess.Popen(node.switch.exec_argv(
            "iperf3", "-s", "-1", "-p", str(port)), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))

    node.server = server  # type: ignore[attr-defined]
    yield node
    for proc in servers:
        proc.kill()
        proc.wait()


def iperf(node, port: int, *extra: str, seconds: int = 5) -> subprocess.Popen:
    argv = node.ns.exec_argv("iperf3", "-c", "198.51.100.2", "-p", str(port), "-t",
                             str(seconds), "-O", "1", "-J", *extra)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def mbit(proc: subprocess.Popen) -> float:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6


def wait_for_servers(node, *ports: int) -> None:
    for _ in range(50):
        listening = node.switch.run("ss", "-Htln").stdout
        if all(f":{port} " in listening for port in ports):
            return
        time.sleep(0.1)
    raise AssertionError(f"iperf3 servers on {ports} did not start")


def test_tcp_through_tbf_50mbit_measures_the_limit(wired):
    node = wired
    node.write_profile("q", TBF.replace("RATE", "50mbit"))
    node.write_config(["q"])
    assert node.ctl("apply").returncode == 0
    node.server(5301)
    wait_for_servers(node, 5301)
    measured = mbit(iperf(node, 5301))
    assert abs(measured - 50) <= 5, f"{measured:.1f} Mbit/s through a 50 Mbit/s tbf"


def test_two_htb_classes_80_20_under_contention(wired):
    node = wired
    node.write_profile("q", HTB.replace("HIGH", "80%"))
    node.write_config(["q"])
    assert node.ctl("apply").returncode == 0
    node.server(5301)
    node.server(5302)
    wait_for_servers(node, 5301, 5302)
    high = iperf(node, 5301, "-S", "0x88")  # DSCP af41 -> class high
    low = iperf(node, 5302)  # unmarked -> the default class, low
    high_mbit, low_mbit = mbit(high), mbit(low)
    assert abs(high_mbit - 40) <= 4, f"high class: {high_mbit:.1f} Mbit/s (rate 40)"
    assert abs(low_mbit - 10) <= 1, f"low class: {low_mbit:.1f} Mbit/s (rate 10)"
