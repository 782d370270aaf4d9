"""The daemon's event sources against the real kernel, run inside network namespaces.

The sources run in a driver process under ``ip netns exec`` (``DRIVER`` below: one asyncio
loop, like the daemon's), while ``ip`` and ``ethtool`` change the namespace from outside the
loop. The independent witnesses are the kernel's own answers: ``if_nameindex`` after each
step and a fresh ``Links.dump`` on another socket at the end.

The pure parts (``LinkView`` folding, the ethtool dispatch, the udev database check) are
tested here too, without root.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from nodenetd.daemon.sources.ethtool_monitor import EthtoolMonitor
from nodenetd.daemon.sources.rtnl import RTM_DELLINK, LinkChange, LinkView
from nodenetd.daemon.sources.udev import UdevEvents, udev_initialized, udev_unavailable_reason
from nodenetd.kernel.ethtool import (
    ethtool_coalesce_msg,
    ethtool_features_msg,
    ethtool_rings_msg,
)
from nodenetd.kernel.links import RTM_NEWLINK, Link
from nodenetd.kernel.netlink import NLMSGHDR, encode_attrs
from tests.lab.netns import REPO, VENV_BIN, Netns, require_tools

needs_ip = pytest.mark.skipif(bool(require_tools("ip")), reason="needs ip")
needs_ethtool = pytest.mark.skipif(bool(require_tools("ethtool", "ip")), reason="needs ethtool")

# Runs one scenario (JSON in argv[1]) on one asyncio loop and prints a JSON result.
#   steps:   LinkEvents (+ EthtoolMonitor); after each step's commands the loop settles and
#            the changes, other events and notifications since the previous step are reported,
#            with if_nameindex() as the witness.
#   storm:   LinkEvents with a given receive buffer; `ip -batch` runs the storm while the loop
#            reads ("reading"), reads slowly ("slow") or is blocked ("busy"); once quiet, the
#            view is compared with a fresh Links.dump().
#   truncated: LinkEvents with a read buffer too small for one notification.
#   udev:    UdevEvents with the given source; commands; the events seen.
DRIVER = r"""
import asyncio, json, socket, subprocess, sys, time
from nodenetd.daemon.sources.ethtool_monitor import EthtoolMonitor
from nodenetd.daemon.sources.rtnl import LinkEvents
from nodenetd.daemon.sources.udev import UdevEvents
from nodenetd.kernel.links import Links

spec = json.loads(sys.argv[1])

def change_json(change):
    link = change.link
    return {"action": change.action, "name": link.name, "index": link.index,
            "old_name": change.old_name, "mtu": link.mtu, "admin_up": link.admin_up}

async def run(argv, stdin=None):
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin else None,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(stdin.encode() if stdin else None)
    if proc.returncode:
        raise SystemExit(f"{argv} exited {proc.returncode}: {err.decode()}")

async def quiet(source, seconds):
    # settle: until the source saw no wakeup for `seconds`
    while True:
        before = source.wakeups
        await asyncio.sleep(seconds)
        if source.wakeups == before:
            return

async def steps(loop):
    changes, other, notes = [], [], []
    events = LinkEvents(changes.append, other.append)
    events.start(loop)
    monitor = None
    if spec.get("ethtool"):
        monitor = EthtoolMonitor(lambda kind, ifindex: notes.append([kind, ifindex]))
        monitor.start(loop)
    out = {"initial": sorted(events.view.links), "steps": []}
    for step in spec["steps"]:
        for argv in step:
            await run(argv)
        await asyncio.sleep(0.3)
        out["steps"].append({
            "changes": [change_json(c) for c in changes],
            "other": list(other),
            "notify": list(notes),
            "witness": {name: index for index, name in socket.if_nameindex()},
        })
        changes.clear(); other.clear(); notes.clear()
    out["events"] = dict(events.events)
    out["resyncs"] = events.resyncs
    events.close()
    if monitor:
        out["ethtool_events"] = dict(monitor.events)
        monitor.close()
    return out

async def storm(loop):
    actions, last = {}, [0.0]
    def on_change(change):
        actions[change.action] = actions.get(change.action, 0) + 1
        last[0] = time.perf_counter()
        if spec["reader"] == "slow":  # the daemon's work per change, say
            time.sleep(0.0005)
    events = LinkEvents(on_change, rcvbuf=spec["rcvbuf"])
    events.start(loop)
    start = time.perf_counter()
    if spec["reader"] == "busy":  # the loop does not read during the storm: a long reconcile
        subprocess.run(["ip", "-batch", "-"], input=spec["batch"], text=True, check=True)
    else:
        await run(["ip", "-batch", "-"], spec["batch"])
    ip_seconds = time.perf_counter() - start
    ip_end = time.perf_counter()
    await quiet(events, 0.3)
    with Links() as links:
        fresh = links.dump()
    view = dict(events.view.links)
    by_index = dict(events.view.by_index)
    diff = sorted(set(fresh) ^ set(view))[:10] + sorted(
        name for name in set(fresh) & set(view) if fresh[name] != view[name])[:10]
    out = {
        "equal": view == fresh,
        "index_equal": by_index == {link.index: link for link in fresh.values()},
        "links": len(fresh), "diff": diff,
        "events": dict(events.events), "resyncs": events.resyncs,
        "overflows": events.overflows, "wakeups": events.wakeups,
        "rcvbuf": events.rcvbuf, "actions": actions,
        "ip_seconds": ip_seconds, "caught_up_seconds": last[0] - start,
        "processing_after_ip_seconds": max(0.0, last[0] - ip_end),
    }
    events.close()
    return out

async def truncated(loop):
    # a read buffer too small for one link notification: lost, reported, resynced, grown
    changes = []
    events = LinkEvents(changes.append)
    events.start(loop)
    events._sock._view = memoryview(bytearray(256))
    for argv in spec["commands"]:
        await run(argv)
    await quiet(events, 0.3)
    with Links() as links:
        fresh = links.dump()
    out = {"equal": dict(events.view.links) == fresh, "resyncs": events.resyncs,
           "buffer": len(events._sock._view),
           "changes": sorted([c.action, c.link.name] for c in changes)}
    events.close()
    return out

async def udev(loop):
    seen = []
    source = UdevEvents(lambda action, name, index, props: seen.append(
        [action, name, index, props.get("INTERFACE")]), source=spec["source"])
    started = source.start(loop)
    for argv in spec["commands"]:
        await run(argv)
    await asyncio.sleep(0.3)
    out = {"started": started, "reason": source.reason, "seen": seen,
           "initialized": source.initialized(1)}
    source.close()
    return out

async def main():
    loop = asyncio.get_running_loop()
    scenarios = {"steps": steps, "storm": storm, "truncated": truncated, "udev": udev}
    return await scenarios[spec["scenario"]](loop)

print(json.dumps(asyncio.run(main())))
"""


def drive(netns: Netns, **spec: Any) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = netns.run(str(VENV_BIN / "python"), "-c", DRIVER, json.dumps(spec), env=env, timeout=120)
    return json.loads(proc.stdout)


def ip(*argv: str) -> list[str]:
    return ["ip", *argv]


def summary(changes: list[dict[str, Any]]) -> list[tuple]:
    return [(c["action"], c["name"], c["old_name"]) for c in changes]


# --- rtnetlink: link changes, one at a time ------------------------------------------------


@pytest.mark.root
@needs_ip
def test_each_link_change_is_reported_exactly_once(netns):
    out = drive(
        netns,
        scenario="steps",
        steps=[
            [ip("link", "add", "va", "type", "veth", "peer", "name", "vb")],
            [ip("link", "set", "va", "name", "vc")],
            [ip("link", "set", "vc", "mtu", "9000")],
            [ip("link", "add", "br0", "type", "bridge")],
            [ip("link", "set", "vb", "master", "br0")],
            [ip("link", "set", "vb", "nomaster")],
            [ip("link", "del", "vc")],
        ],
    )
    assert out["initial"] == ["lo"]
    created, renamed, mtu, bridge, enslaved, released, deleted = out["steps"]

    witness = created["witness"]
    assert sorted(summary(created["changes"])) == [("new", "va", None), ("new", "vb", None)]
    for change in created["changes"]:
        assert change["index"] == witness[change["name"]]

    # a rename keeps the ifindex and reports the old name, once
    assert summary(renamed["changes"]) == [("renamed", "vc", "va")]
    assert renamed["changes"][0]["index"] == witness["va"] == renamed["witness"]["vc"]

    assert summary(mtu["changes"]) == [("changed", "vc", None)]
    assert mtu["changes"][0]["mtu"] == 9000

    assert summary(bridge["changes"]) == [("new", "br0", None)]
    # Enslaving and releasing change vb's master: "changed", never "deleted". The bridge's
    # own AF_BRIDGE RTM_DELLINK on release is about the port, not the device.
    assert ("changed", "vb", None) in summary(enslaved["changes"])
    assert ("changed", "vb", None) in summary(released["changes"])
    assert all(c["action"] != "deleted" for c in enslaved["changes"] + released["changes"])

    # deleting one end deletes both; "deleted" carries the last known link
    assert sorted(summary(deleted["changes"])) == [("deleted", "vb", None), ("deleted", "vc", None)]
    last = {c["name"]: c for c in deleted["changes"]}
    assert last["vc"]["mtu"] == 9000 and last["vc"]["index"] == witness["va"]
    assert last["vb"]["index"] == witness["vb"]
    assert set(deleted["witness"]) == {"lo", "br0"}
    # nothing but link messages so far, no address or route events from plain veths
    assert all(step["other"] == [] for step in out["steps"][:3])
    assert out["resyncs"] == 0


@pytest.mark.root
@needs_ip
def test_address_and_route_events_are_counted_not_reported_as_link_changes(netns):
    out = drive(
        netns,
        scenario="steps",
        steps=[
            [ip("route", "add", "10.10.0.0/24", "dev", "lo")],
            [ip("route", "del", "10.10.0.0/24", "dev", "lo")],
            [ip("addr", "add", "10.9.0.1/32", "dev", "lo")],
            [ip("addr", "del", "10.9.0.1/32", "dev", "lo")],
            [ip("-6", "addr", "add", "fd00::1/128", "dev", "lo", "nodad")],
            [ip("-6", "route", "add", "fd01::/64", "dev", "lo")],
        ],
    )
    route_add, route_del, addr4_add, addr4_del, addr6_add, route6_add = out["steps"]
    assert route_add["other"] == ["newroute"]
    assert route_del["other"] == ["delroute"]
    assert addr4_add["other"].count("newaddr") == 1  # and its local route: newroute
    assert addr4_del["other"].count("deladdr") == 1
    assert addr6_add["other"].count("newaddr") == 1
    assert route6_add["other"] == ["newroute"]
    assert all(step["changes"] == [] for step in out["steps"])
    events = out["events"]
    assert events["newaddr"] == 2 and events["deladdr"] == 1
    assert events["newroute"] >= 3 and events["delroute"] >= 1


# --- rtnetlink: a storm ----------------------------------------------------------------------


def storm_batch(count: int) -> str:
    """4.5 link notifications per pair, 2,250 for 500 pairs, in ~0.25 s: add (2 NEWLINK),
    mtu (1), rename half the peers (1), delete the other half of the pairs (2 DELLINK).
    Deleting veths one by one costs ~16 ms each (an RCU grace period per unregister), so
    they are moved into a group (which sends no notification) and the group is deleted in
    one batch."""
    lines = [f"link add s{i} type veth peer name t{i}" for i in range(count)]
    lines += [f"link set s{i} mtu {9000 - i}" for i in range(count)]
    lines += [f"link set t{i} name u{i}" for i in range(count // 2)]
    lines += [f"link set s{i} group 7" for i in range(count // 2, count)]
    lines += ["link del group 7"]
    return "\n".join(lines) + "\n"


STORM_EVENTS = 2250


@pytest.mark.root
@needs_ip
@pytest.mark.parametrize(
    ("rcvbuf", "reader"),
    [
        (16 << 10, "busy"),  # the loop reads nothing during the storm: overflow, then resync
        (16 << 10, "slow"),  # 0.5 ms per change: overflows while the storm goes on
        (16 << 10, "reading"),
        (8 << 20, "busy"),  # the default buffer holds a whole storm unread
        (8 << 20, "reading"),
    ],
    ids=lambda value: f"{value >> 10}KiB" if isinstance(value, int) else value,
)
def test_storm_leaves_the_view_equal_to_a_fresh_dump(netns, rcvbuf, reader):
    out = drive(netns, scenario="storm", rcvbuf=rcvbuf, reader=reader, batch=storm_batch(500))
    print(json.dumps({k: v for k, v in out.items() if k != "diff"}))
    assert out["equal"], out["diff"]
    assert out["index_equal"]
    assert out["links"] == 1 + 2 * 250  # lo, s0..s249 and their peers, renamed u0..u249
    if reader != "slow":  # (a slow reader's resync dumps compete with ip for the rtnl lock)
        assert out["ip_seconds"] < 1.5, "the storm should take about a second at most"
    link_events = out["events"].get("newlink", 0) + out["events"].get("dellink", 0)
    if rcvbuf < 1 << 20 and reader != "reading":
        assert out["overflows"] > 0 and out["resyncs"] == out["overflows"]
        assert link_events < STORM_EVENTS  # some were dropped, and a dump covered them
    if rcvbuf >= 1 << 20:
        assert out["overflows"] == 0 and out["resyncs"] == 0
        assert link_events == STORM_EVENTS
        assert out["actions"] == {"new": 1000, "changed": 500, "renamed": 250, "deleted": 500}
        if reader == "busy":  # a storm that queued up is drained in a few wakeups
            assert out["wakeups"] <= 1 + link_events // 1000


@pytest.mark.root
@needs_ip
def test_a_notification_larger_than_the_read_buffer_means_resync(netns):
    out = drive(
        netns,
        scenario="truncated",
        commands=[ip("link", "add", "ta", "type", "veth", "peer", "name", "tb")],
    )
    assert out["equal"]
    assert out["resyncs"] >= 1
    assert out["buffer"] >= 4096  # grown until a link notification fits
    assert out["changes"] == [["new", "ta"], ["new", "tb"]]


# --- ethtool notifications -------------------------------------------------------------------


@pytest.mark.root
@needs_ethtool
def test_ethtool_changes_are_notified_with_the_device_ifindex(netns):
    netns.veth("ea", "eb", queues=4, up=False)
    out = drive(
        netns,
        scenario="steps",
        ethtool=True,
        steps=[
            [["ethtool", "-K", "ea", "gro", "on"]],
            [["ethtool", "-K", "eb", "gro", "on"]],
            [["ethtool", "-L", "eb", "rx", "2", "tx", "2"]],
            [["ethtool", "-K", "ea", "gro", "on"]],  # no change: no notification
        ],
    )
    witness = out["steps"][0]["witness"]
    assert witness["ea"] != witness["eb"]
    notes = [step["notify"] for step in out["steps"]]
    assert notes == [
        [["features", witness["ea"]]],
        [["features", witness["eb"]]],
        [["channels", witness["eb"]]],
        [],
    ]
    # the kernel re-announces the link on a feature change; nothing in Link changed
    assert all(step["changes"] == [] for step in out["steps"])
    assert out["ethtool_events"] == {"features": 2, "channels": 1}


# --- udev ------------------------------------------------------------------------------------


@pytest.mark.root
@needs_ip
def test_udev_source_stays_off_in_a_namespace_without_failing(netns):
    out = drive(
        netns,
        scenario="udev",
        source="udev",
        commands=[ip("link", "add", "ua", "type", "veth", "peer", "name", "ub")],
    )
    assert out["started"] is False
    assert "udevd" in out["reason"]  # not running here, or not this namespace's
    assert out["seen"] == []
    assert out["initialized"] is False


@pytest.mark.root
@needs_ip
def test_uevent_wrapper_reports_action_name_and_ifindex(netns):
    """The monitor wrapping (fd, drain, decode) with the kernel's own uevents, which reach a
    namespace where udev's never do."""
    out = drive(
        netns,
        scenario="udev",
        source="kernel",
        commands=[
            ip("link", "add", "ka", "type", "veth", "peer", "name", "kb"),
            ip("link", "set", "ka", "name", "kc"),
            ip("link", "del", "kc"),
        ],
    )
    assert out["started"] is True
    seen = out["seen"]
    index = {name: idx for action, name, idx, _ in seen if action == "add"}
    assert set(index) == {"ka", "kb"} and index["ka"] != index["kb"]
    assert ["move", "kc", index["ka"], "kc"] in seen
    assert ["remove", "kc", index["ka"], "kc"] in seen
    assert ["remove", "kb", index["kb"], "kb"] in seen
    assert all(name == interface for _, name, _, interface in seen)


@pytest.mark.root
def test_udev_is_unavailable_outside_its_network_namespace(netns, tmp_path):
    control = tmp_path / "control"
    self_ns = Path("/proc/self/ns/net")
    assert "not running" in udev_unavailable_reason(control=control)
    control.touch()
    assert udev_unavailable_reason(control=control, netns_init=self_ns) is None
    other = Path("/run/netns") / netns.name
    reason = udev_unavailable_reason(control=control, netns_init=other)
    assert reason is not None and "namespace" in reason


def test_udev_initialized_reads_the_database(tmp_path):
    (tmp_path / "n7").write_text("I:123\n")
    (tmp_path / "c1:2").write_text("")  # a character device's entry, not an interface
    assert udev_initialized(7, db_dir=tmp_path)
    assert not udev_initialized(2, db_dir=tmp_path)
    assert not udev_initialized(8, db_dir=tmp_path)
    # the source vouches only while udev serves this namespace
    source = UdevEvents(lambda *event: None, db_dir=tmp_path, control=tmp_path / "missing")
    assert not source.initialized(7)


# --- LinkView, without a kernel --------------------------------------------------------------


def link(index: int, name: str, **fields: Any) -> Link:
    values: dict[str, Any] = {
        "kind": "veth",
        "slave_kind": None,
        "master": None,
        "mtu": 1500,
        "min_mtu": 68,
        "max_mtu": 65535,
        "txqueuelen": 1000,
        "admin_up": False,
        "operstate": "DOWN",
        "carrier": False,
        "mac": None,
        "perm_mac": None,
        "parent_bus": None,
    }
    return Link(index=index, name=name, **(values | fields))


def test_view_folds_new_changed_renamed_deleted():
    view = LinkView()
    a = link(5, "a")
    assert view.apply(RTM_NEWLINK, a) == LinkChange("new", a)
    assert view.apply(RTM_NEWLINK, a) is None  # re-announced, nothing changed
    a9000 = link(5, "a", mtu=9000)
    assert view.apply(RTM_NEWLINK, a9000) == LinkChange("changed", a9000)
    b = link(5, "b", mtu=9000)
    assert view.apply(RTM_NEWLINK, b) == LinkChange("renamed", b, "a")
    assert dict(view.links) == {"b": b} and dict(view.by_index) == {5: b}
    assert view.apply(RTM_DELLINK, link(5, "b")) == LinkChange("deleted", b)
    assert view.apply(RTM_DELLINK, link(5, "b")) is None
    assert dict(view.links) == {} and dict(view.by_index) == {}


def test_view_replace_reports_the_difference():
    view = LinkView([link(1, "lo"), link(2, "a"), link(3, "b"), link(4, "c")])
    fresh = [link(1, "lo"), link(2, "a2"), link(3, "b", mtu=1400), link(6, "c")]
    changes = view.replace({x.name: x for x in fresh})
    assert [(c.action, c.link.name, c.link.index, c.old_name) for c in changes] == [
        ("deleted", "c", 4, None),
        ("renamed", "a2", 2, "a"),
        ("changed", "b", 3, None),
        ("new", "c", 6, None),
    ]
    assert dict(view.links) == {x.name: x for x in fresh}
    assert view.replace({x.name: x for x in fresh}) == []


def test_view_converges_when_older_notifications_replay_after_a_dump():
    """Subscribed, then dumped: the queue may still hold what happened before the dump. Here
    ifindex 4 was named x, deleted, and x went to ifindex 5, which the dump already shows."""
    final = link(5, "x", mtu=1400)
    view = LinkView([link(1, "lo"), final])
    for msg_type, item in [
        (RTM_NEWLINK, link(4, "x")),
        (RTM_DELLINK, link(4, "x")),
        (RTM_NEWLINK, link(5, "x")),
        (RTM_NEWLINK, final),
    ]:
        view.apply(msg_type, item)
    assert dict(view.links) == {"lo": link(1, "lo"), "x": final}
    assert dict(view.by_index) == {1: link(1, "lo"), 5: final}


# --- ethtool dispatch, without a kernel ------------------------------------------------------


def notification(family: int, cmd: int, msg_class: type, ifindex: int) -> bytes:
    header = ("ETHTOOL_A_HEADER_DEV_INDEX", ifindex)
    attrs = encode_attrs(msg_class, [(msg_class.header_attr, {"attrs": [header]})])
    payload = struct.pack("=BBH", cmd, 1, 0) + attrs
    return NLMSGHDR.pack(NLMSGHDR.size + len(payload), family, 0, 0, 0) + payload


def test_ethtool_dispatch_by_message_number():
    seen: list[tuple[str, int]] = []
    monitor = EthtoolMonitor(lambda kind, ifindex: seen.append((kind, ifindex)))
    monitor.family_id = 21
    data = b"".join(
        [
            notification(21, 13, ethtool_features_msg, 3),  # ETHTOOL_MSG_FEATURES_NTF
            notification(21, 17, ethtool_rings_msg, 4),  # ETHTOOL_MSG_RINGS_NTF
            notification(21, 19, ethtool_rings_msg, 5),  # CHANNELS_NTF (header layout alike)
            notification(21, 21, ethtool_coalesce_msg, 6),  # ETHTOOL_MSG_COALESCE_NTF
            notification(21, 12, ethtool_features_msg, 7),  # FEATURES_SET_REPLY: not ours
            notification(22, 13, ethtool_features_msg, 8),  # another family
        ]
    )
    monitor.handle(data)
    assert seen == [("features", 3), ("rings", 4), ("channels", 5), ("coalesce", 6)]
    assert monitor.events == {"features": 1, "rings": 1, "channels": 1, "coalesce": 1, "cmd-12": 1}
