"""Route-group failover end to end: nodenetd in a node with two uplinks (tests/lab/uplinks.py),
the faults made on the router side, every outcome read through ``ip route``/``ip rule``/
``ping``/``sysctl`` as well as ``nodenetctl failover status``.

The group keeps ``default`` (v4 and v6) on its active member: an active-slot route at metric
50 and standby routes at 51, 52 with ``ignore_routes_with_linkdown`` on both members, plus a
table and an ``oif`` rule per member for its probes.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.integration.daemon_lab import eventually
from tests.integration.failover_lab import FailoverLab, flap, group_yaml, member_yaml
from tests.lab.node import Node
from tests.lab.uplinks import SERVER_V4, SERVER_V6, UplinkLab, gateway, node_address

pytestmark = pytest.mark.root


def owned_rules(lab: FailoverLab, version: int) -> list[dict]:
    # iproute2 6.1 ignores "proto" as a filter of `ip rule show`: filter here
    rules = lab.ns.json("ip", "-j", f"-{version}", "rule", "show")
    return [rule for rule in rules if rule.get("protocol") == "177"]


@pytest.fixture
def lab(make_netns, tmp_path):
    uplinks = UplinkLab.build(make_netns)
    lab = FailoverLab(uplinks, Node(uplinks.node, None, tmp_path))
    yield lab
    lab.stop()


def test_the_group_installs_its_routes_rules_and_the_kernels_fast_path(lab):
    lab.start()
    lab.wait_active("a0")

    for version in (4, 6):
        routes = {(r["metric"], r["dev"], r["gateway"]) for r in lab.owned_routes(version)}
        assert routes == {(50, "a0", gateway("a0", version)), (51, "a0", gateway("a0", version)),
                          (52, "b0", gateway("b0", version))}
        for table, member in (("1000", "a0"), ("1001", "b0")):
            (route,) = lab.owned_routes(version, table)
            assert (route["dev"], route["gateway"]) == (member, gateway(member, version))
        rules = owned_rules(lab, version)
        assert {(r["priority"], r["oif"], r["table"]) for r in rules} == {
            (1000, "a0", "1000"), (1000, "b0", "1001")}
        for member in ("a0", "b0"):
            key = f"net.ipv{version}.conf.{member}.ignore_routes_with_linkdown"
            assert lab.ns.sysctl(key) == "1"
    assert lab.uplinks.device_for(SERVER_V4) == "a0"
    assert lab.uplinks.device_for(SERVER_V6) == "a0"
    assert lab.ping(count=3) == (3, 3)
    status = lab.status()
    assert [m["standing"] for m in status["members"]] == ["up", "up"]
    assert all(p["state"] == "up" and p["sent"] > 0 for m in status["members"]
               for p in m["probes"])


def test_a_pulled_cable_fails_over_and_the_traffic_follows(lab):
    lab.start()
    lab.wait_active("a0")

    lab.uplinks.cut("a0")

    status = lab.wait_active("b0")
    assert lab.slot(4) == lab.slot(6) == "b0"
    assert lab.uplinks.device_for(SERVER_V4) == "b0"
    assert lab.uplinks.device_for(SERVER_V6) == "b0"
    assert lab.ping(count=3) == (3, 3)
    assert lab.ping(SERVER_V6, count=3) == (3, 3)
    assert status["counters"]["switches"].get("failover") == 1
    a0 = next(m for m in status["members"] if m["name"] == "a0")
    assert a0["link"]["carrier"] is False and a0["standing"] == "down"
    assert len(lab.log_lines("a0 -> b0 (failover)")) == 1
    assert lab.log_lines("a0: up -> down (carrier): carrier lost")


def test_the_kernel_moves_traffic_on_carrier_loss_even_while_nodenetd_holds(lab):
    lab.start()
    lab.wait_active("a0")
    assert lab.ctl("failover", "hold", "uplinks").returncode == 0

    lab.uplinks.cut("a0")

    # nodenetd keeps its hands off (the slot stays on a0) but the kernel skips the linkdown
    # routes, so traffic already flows through the standby route via b0.
    assert eventually(lambda: lab.member("a0")["standing"] == "down")
    assert lab.slot() == "a0"
    assert lab.uplinks.device_for(SERVER_V4) == "b0"
    assert lab.ping(count=3) == (3, 3)
    status = lab.status()
    assert status["override"] == {"hold": True} and status["active"] == "a0"
    assert status["active_usable"] is False

    assert lab.ctl("failover", "release", "uplinks").returncode == 0
    lab.wait_active("b0")
    assert lab.slot() == "b0"


def test_a_gray_failure_with_carrier_up_moves_the_routes(lab):
    lab.start()
    lab.wait_active("a0")

    lab.uplinks.block("a0")

    status = lab.wait_active("b0")
    assert lab.ns.link("a0")["operstate"] == "UP"  # carrier monitoring saw nothing
    assert lab.slot(4) == lab.slot(6) == "b0"
    assert lab.ping(count=3) == (3, 3)
    a0 = next(m for m in status["members"] if m["name"] == "a0")
    assert a0["link"]["carrier"] is True
    assert all(p["state"] == "down" for p in a0["probes"])
    assert lab.log_lines("a0: up -> down (probe targets lost)")
    assert status["counters"]["detections_ms"], status["counters"]


@pytest.mark.parametrize(("combine", "fails_over"), [
    ("any", False), ("all", True), ("{quorum: 2}", False), ("{quorum: 3}", True)])
def test_partly_failing_targets_count_by_any_all_and_quorum(lab, combine, fails_over):
    """Three targets on a0 (the server through the router, the router by ICMP and by ARP);
    a blackhole on router A kills only the first: 2 of 3 stay up."""
    probes = (f"[{{icmp: {SERVER_V4}}}, {{icmp: {gateway('a0')}}}, "
              f"{{arp: {gateway('a0')}}}]")
    members = (member_yaml("a0", 100, probes, extra=f"combine: {combine}\n")
               + member_yaml("b0", 50))
    lab.start(group_yaml(members=members))
    lab.wait_active("a0")

    lab.uplinks.blackhole("a0")

    server = f"icmp:{SERVER_V4}"
    assert eventually(lambda: any(p["state"] == "down" and f"{p['kind']}:{p['target']}" == server
                                  for p in lab.member("a0")["probes"]))
    if fails_over:
        lab.wait_active("b0")
        assert lab.slot() == "b0"
    else:
        # time for a wrong verdict to act (many probe intervals); the router still answers
        assert lab.ping(gateway("a0"), count=5, interval=0.05) == (5, 5)
        a0 = lab.member("a0")
        assert a0["usable"] and "2 of 3 targets up" in a0["path"], a0
        assert lab.status()["active"] == "a0" and lab.slot() == "a0"


def test_recovery_fails_back_after_the_hold_down_without_losing_a_packet(lab):
    lab.start(group_yaml(preempt_delay=4))
    lab.wait_active("a0")
    lab.uplinks.block("a0")
    lab.wait_active("b0")
    # 10 s of pings at 5 ms, running before the recovery and until after the failback
    # (make-before-break: one route replace, nothing lost)
    pinger = subprocess.Popen(lab.ns.exec_argv("ping", "-q", "-n", "-c", "2000", "-i", "0.005",
                                               "-W", "1", SERVER_V4),
                              stdout=subprocess.PIPE, text=True)
    try:
        lab.uplinks.block("a0", blocked=False)
        lab.wait_usable("a0")
        status = lab.wait_active("a0", timeout=30)
        spanned = pinger.poll() is None  # the pings were still running at the failback
        out = pinger.communicate(timeout=60)[0]
    finally:
        pinger.kill()
    assert pinger.returncode == 0, out
    assert " 0% packet loss" in out, out
    assert status["counters"]["switches"].get("failback") == 1
    assert lab.log_lines("b0 -> a0 (failback)")
    assert spanned, "the failback came after the pings ended: nothing was measured"
    assert "preempt_delay 4 s" in lab.log_lines("b0 -> a0 (failback)")[0]
    assert lab.slot() == "a0"


def test_sticky_groups_stay_on_the_healthy_backup(lab):
    lab.start(group_yaml(failback="sticky", preempt_delay=0))
    lab.wait_active("a0")
    lab.uplinks.cut("a0")
    lab.wait_active("b0")

    lab.uplinks.cut("a0", down=False)
    lab.wait_usable("a0")

    assert lab.ping(count=5, interval=0.1) == (5, 5)  # time for a wrong failback to happen
    status = lab.status()
    assert status["active"] == "b0" and "failback" not in status["counters"]["switches"]


def test_a_flapping_member_is_damped_and_switches_stay_bounded(lab):
    damping = "damping: {half_life: 3, max_suppress: 12}\n"
    lab.start(group_yaml(preempt_delay=0.5, extra=damping))
    lab.wait_active("a0")

    cycles = flap(lab.uplinks, "a0", hz=10, seconds=10)

    assert cycles >= 50
    a0 = lab.member("a0")
    assert a0["damping"]["suppressed"] and a0["standing"] == "suppressed", a0
    assert a0["damping"]["flaps"] >= 3
    status = lab.status()
    assert status["active"] == "b0"
    switches = sum(status["counters"]["switches"].values())
    assert switches <= 4, status["counters"]  # initial, failover, at most one failback + one
    assert lab.log_lines("(damping)")
    assert lab.ping(count=3) == (3, 3)
    # stable again: released within max_suppress, then failback
    lab.wait_active("a0", timeout=30)
    assert not lab.member("a0")["damping"]["suppressed"]


def test_both_members_down_then_one_back(lab):
    lab.start()
    lab.wait_active("a0")

    lab.uplinks.cut("a0")
    lab.uplinks.cut("b0")
    assert eventually(lambda: not lab.status()["active_usable"])
    status = lab.status()
    assert [m["standing"] for m in status["members"]] == ["down", "down"]
    assert lab.owned_routes()  # nothing torn down: the kernel recovers the moment one returns

    lab.uplinks.cut("b0", down=False)
    lab.wait_active("b0")
    assert lab.slot() == "b0"
    assert lab.ping(count=3) == (3, 3)


def test_a_manual_switch_pins_for_its_duration_then_the_rules_decide_again(lab):
    lab.start()
    lab.wait_active("a0")

    proc = lab.ctl("failover", "switch", "uplinks", "b0", "--for", "10m")

    assert proc.returncode == 0, proc.stderr
    assert "a0 -> b0 (manual)" in proc.stdout
    assert lab.slot() == "b0" and lab.uplinks.device_for() == "b0"
    override = lab.status()["override"]
    assert override["switch"] == "b0" and 0 < override["remaining"] <= 600
    assert lab.ctl("failover", "release", "uplinks").returncode == 0
    lab.wait_active("a0")  # released: preempt brings back the better member

    assert lab.ctl("failover", "switch", "uplinks", "b0", "--for", "1s").returncode == 0
    assert eventually(lambda: lab.log_lines("manual switch expired"), timeout=20)
    lab.wait_active("a0")
    assert lab.status()["override"] is None


def test_manual_commands_are_refused_with_reasons(lab):
    lab.start()
    lab.wait_active("a0")
    lab.uplinks.cut("b0")
    lab.wait_usable("b0", False)

    unusable = lab.ctl("failover", "switch", "uplinks", "b0")
    unknown_member = lab.ctl("failover", "switch", "uplinks", "x9")
    unknown_group = lab.ctl("failover", "hold", "nosuch")
    bad_duration = lab.ctl("failover", "switch", "uplinks", "a0", "--for", "soon")

    assert unusable.returncode == 1 and "b0: it is not usable now" in unusable.stderr
    assert unknown_member.returncode == 1 and "not a member" in unknown_member.stderr
    assert unknown_group.returncode == 1 and "no running failover group 'nosuch'" in \
        unknown_group.stderr
    assert bad_duration.returncode == 64 and "not a duration" in bad_duration.stderr
    assert lab.status()["active"] == "a0"


def test_peers_learn_the_new_path_from_gratuitous_arp_and_unsolicited_na(lab):
    """Router B holds stale neighbour entries for the node's b0 addresses; after the switch
    nodenetd's announcements on b0 correct them without any traffic from the router."""
    router = lab.uplinks.routers["b0"]
    lab.start()
    lab.wait_active("a0")
    real_mac = lab.ns.link("b0")["address"]
    stale = "02:00:00:00:00:99"
    for version in (4, 6):
        router.run("ip", f"-{version}", "neigh", "replace", node_address("b0", version),
                   "lladdr", stale, "dev", "br0", "nud", "stale")

    lab.uplinks.block("a0")
    lab.wait_active("b0")

    def learned() -> bool:
        entries = {n["dst"]: n.get("lladdr") for version in (4, 6)
                   for n in router.json("ip", "-j", f"-{version}", "neigh", "show", "dev", "br0")}
        return all(entries.get(node_address("b0", v)) == real_mac for v in (4, 6))

    assert eventually(learned, timeout=5)
    assert lab.status()["notify"]["rounds"] >= 2


def test_a_no_op_reload_moves_nothing_and_a_changed_group_is_rebuilt(lab):
    daemon = lab.start()
    lab.wait_active("a0")
    monitor = subprocess.Popen(lab.ns.exec_argv("ip", "-o", "monitor", "route"),
                               stdout=subprocess.PIPE, text=True)
    try:
        proc = lab.ctl("reload")
        assert proc.returncode == 0, proc.stderr
        assert lab.ping(count=3, interval=0.1) == (3, 3)
    finally:
        monitor.terminate()
        routes_changed = monitor.communicate(timeout=10)[0]
    assert "proto 177" not in routes_changed, routes_changed
    assert sum(lab.status()["counters"]["switches"].values()) == 1  # only the initial one

    members = member_yaml("a0", 10) + member_yaml("b0", 50)  # b0 is now preferred
    lab.write_config(group_yaml(members=members, preempt_delay=0.5))
    assert lab.ctl("reload").returncode == 0
    lab.wait_active("b0")
    assert lab.slot() == "b0"
    assert "reload: failover changed group uplinks" in daemon.log


def test_stop_with_restore_removes_what_the_group_owns(lab):
    daemon = lab.start(daemon=", on_stop: restore")
    lab.wait_active("a0")
    assert lab.owned_routes()

    assert daemon.stop() == 0

    for version in (4, 6):
        assert lab.owned_routes(version) == []
        assert lab.owned_routes(version, "1000") == []
        assert owned_rules(lab, version) == []
        assert lab.ns.sysctl(f"net.ipv{version}.conf.a0.ignore_routes_with_linkdown") == "0"


def test_failover_commands_need_the_daemon(lab):
    lab.write_config(group_yaml())

    proc = lab.ctl("failover", "status")

    assert proc.returncode == 1
    assert "nodenetd is not running" in proc.stderr


def test_status_text_shows_members_health_and_the_active_member(lab):
    lab.start()
    lab.wait_active("a0")

    text = lab.ctl("failover", "status").stdout

    assert "uplinks (route group, failback preempt): active a0" in text
    lines = {line.split()[1] if line.strip().startswith("*") else line.split()[0]: line
             for line in text.splitlines()[2:] if line.strip()}
    assert lines["a0"].strip().startswith("*") and "100" in lines["a0"]
    assert " up " in lines["b0"]
    assert json.loads(lab.ctl("failover", "status", "-o", "json").stdout)["groups"]
