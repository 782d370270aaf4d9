"""Links over rtnetlink and pipelined feature sets against the real kernel, in namespaces.

The adapter runs inside the namespace (``LAB`` below under ``ip netns exec``); ``ip -j`` and
``ethtool -k`` reading the same devices are the independent witnesses.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.lab.netns import REPO, VENV_BIN, Netns, require_tools

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(bool(require_tools("ethtool", "ip")), reason="needs ethtool and ip"),
]

# Runs the operations given as JSON in argv[1] on one Links and one EthtoolNetlink socket and
# prints one JSON result per operation. A link is named by its name (looked up in a fresh
# dump) or given as {"name", "index"} (for a link that no longer exists).
LAB = r"""
import dataclasses, json, socket, sys, time
from nodenetd.kernel.ethtool import EthtoolNetlink
from nodenetd.kernel.links import Link, Links
from nodenetd.kernel.netlink import NetlinkSocket

def error(exc):
    if exc is None:
        return None
    return {"error": type(exc).__name__, "target": exc.target, "setting": exc.setting,
            "errno": exc.errno, "reason": exc.reason}

def link_of(links, spec):
    if isinstance(spec, str):
        return links.dump()[spec]
    return Link(index=spec["index"], name=spec["name"], kind="veth", slave_kind=None,
                master=None, mtu=1500, min_mtu=68, max_mtu=65535, txqueuelen=1000,
                admin_up=False, operstate="DOWN", carrier=False, mac=None, perm_mac=None,
                parent_bus=None)

def index_of(spec):
    return spec["index"] if isinstance(spec, dict) else socket.if_nametoindex(spec)

def run(links, ethtool, op):
    kind = op["op"]
    if kind == "dump":
        return {name: dataclasses.asdict(link) | {"kinds": sorted(link.kinds)}
                for name, link in links.dump().items()}
    if kind == "get":
        link = links.get(op["index"])
        return None if link is None else dataclasses.asdict(link)
    if kind == "set_many":
        items = [(link_of(links, spec), attrs) for spec, attrs in op["items"]]
        return [error(e) for e in links.set_many(items)]
    if kind == "set_features_many":
        items = [(index_of(spec), spec if isinstance(spec, str) else spec["name"], wanted)
                 for spec, wanted in op["items"]]
        return [error(e) for e in ethtool.set_features_many(items)]
    if kind == "overrun":  # RTM_NEWLINK mtu sets through a socket with a tiny receive buffer
        import logging
        from nodenetd.kernel.links import RTM_NEWLINK, _setlink_payload
        warnings = []
        handler = logging.Handler()
        handler.emit = warnings.append
        logging.getLogger("nodenetd.kernel.netlink").addHandler(handler)
        with NetlinkSocket(socket.NETLINK_ROUTE, rcvbuf=4096) as nl:
            dump = links.dump()
            requests = [(RTM_NEWLINK, _setlink_payload(dump[name], {"mtu": mtu}))
                        for name, mtu in op["items"]]
            results = [None if r == [] else repr(r) for r in nl.request_many(requests)]
        return {"results": results, "resent": len(warnings)}
    raise ValueError(kind)

results = []
with Links() as links, EthtoolNetlink() as ethtool:
    for op in json.loads(sys.argv[1]):
        start = time.perf_counter()
        value = run(links, ethtool, op)
        results.append({"value": value, "seconds": time.perf_counter() - start})
print(json.dumps(results))
"""


def lab(netns: Netns, *ops: dict[str, Any]) -> list[Any]:
    """Run the operations inside the namespace on one pair of sockets; their values."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = netns.run(str(VENV_BIN / "python"), "-c", LAB, json.dumps(list(ops)), env=env)
    return [result["value"] for result in json.loads(proc.stdout)]


def veths(netns: Netns, count: int, prefix: str = "x", peer: str = "y") -> list[str]:
    batch = "".join(f"link add {prefix}{i} type veth peer name {peer}{i}\n" for i in range(count))
    netns.run("ip", "-batch", "-", input=batch)
    return [f"{prefix}{i}" for i in range(count)]


def ip_links(netns: Netns) -> dict[str, dict[str, Any]]:
    return {link["ifname"]: link for link in netns.json("ip", "-j", "-d", "link", "show")}


# --- reading -------------------------------------------------------------------------------------


def test_dump_matches_ip_link(netns):
    netns.veth("a0", "b0")
    netns.run("ip", "link", "add", "br0", "type", "bridge")
    netns.run("ip", "link", "set", "b0", "master", "br0")
    netns.run("ip", "link", "add", "mv0", "link", "a0", "type", "macvlan")
    netns.run("ip", "link", "set", "a0", "mtu", "1400", "txqueuelen", "321")
    netns.run("ip", "link", "set", "a0", "address", "02:00:00:00:0a:01")

    (dump,) = lab(netns, {"op": "dump"})
    witness = ip_links(netns)
    assert set(dump) == set(witness) == {"lo", "a0", "b0", "br0", "mv0"}
    index_of = {name: link["ifindex"] for name, link in witness.items()}
    for name, shown in witness.items():
        link = dump[name]
        info = shown.get("linkinfo", {})
        assert link["index"] == shown["ifindex"], name
        assert link["mtu"] == shown["mtu"], name
        assert link["txqueuelen"] == shown["txqlen"], name
        assert link["operstate"] == shown["operstate"], name
        assert link["master"] == (index_of[shown["master"]] if "master" in shown else None), name
        assert link["kind"] == info.get("info_kind"), name
        assert link["slave_kind"] == info.get("info_slave_kind"), name
        assert link["mac"] == shown["address"], name
        assert (link["min_mtu"], link["max_mtu"]) == (shown["min_mtu"], shown["max_mtu"]), name
        assert link["admin_up"] == ("UP" in shown["flags"]), name
        assert link["loopback"] == ("LOOPBACK" in shown["flags"]), name
        if link["admin_up"]:
            assert link["carrier"] == ("LOWER_UP" in shown["flags"]), name
    assert (dump["a0"]["mtu"], dump["a0"]["txqueuelen"]) == (1400, 321)
    assert dump["a0"]["mac"] == "02:00:00:00:0a:01"
    assert dump["b0"]["slave_kind"] == "bridge" and dump["b0"]["master"] == index_of["br0"]
    assert dump["b0"]["kinds"] == ["bridge-member", "veth"]
    assert dump["mv0"]["kind"] == "macvlan"
    assert dump["lo"]["kinds"] == ["loopback"] and dump["lo"]["operstate"] == "UNKNOWN"
    assert dump["a0"]["operstate"] == "UP" and dump["br0"]["operstate"] == "DOWN"


def test_get_of_one_link_equals_its_dump_entry_and_none_when_absent(netns):
    netns.veth("a0", "b0")
    index = netns.link("a0")["ifindex"]
    dump, one, missing = lab(netns, {"op": "dump"}, {"op": "get", "index": index},
                             {"op": "get", "index": 99999})
    assert one == {key: value for key, value in dump["a0"].items() if key != "kinds"}
    assert missing is None


# --- writing -------------------------------------------------------------------------------------


def test_set_many_changes_mtu_txqlen_and_state_of_50_veths(netns):
    names = veths(netns, 50)
    items = [[name, {"mtu": 1400 + i, "txqlen": 100 + i, "state": "up"}]
             for i, name in enumerate(names)]
    (results,) = lab(netns, {"op": "set_many", "items": items})
    assert results == [None] * 50
    shown = ip_links(netns)
    for i, name in enumerate(names):
        assert (shown[name]["mtu"], shown[name]["txqlen"]) == (1400 + i, 100 + i), name
        assert "UP" in shown[name]["flags"], name
        assert "UP" not in shown[f"y{i}"]["flags"]  # the peers are untouched

    (results,) = lab(netns, {"op": "set_many", "items": [[name, {"state": "down"}]
                                                          for name in names]})
    assert results == [None] * 50
    assert all("UP" not in link["flags"] for link in ip_links(netns).values()
               if link["ifname"] != "lo")


def test_set_many_reports_the_one_refused_item_and_applies_the_others(netns):
    names = veths(netns, 10)
    netns.run("ip", "link", "add", "mv0", "link", "x0", "type", "macvlan")
    items = [[name, {"mtu": 2000}] for name in names]
    items.insert(5, ["mv0", {"mtu": 9000}])  # above its lower device's mtu (1500): EINVAL
    (results,) = lab(netns, {"op": "set_many", "items": items})
    refused = results.pop(5)
    assert results == [None] * 10
    assert refused["error"] == "Refused" and refused["errno"] == 22
    assert (refused["target"], refused["setting"]) == ("mv0", "link.mtu")
    assert "EINVAL (Invalid argument)" in refused["reason"]
    shown = ip_links(netns)
    assert shown["mv0"]["mtu"] == 1500
    assert all(shown[name]["mtu"] == 2000 for name in names)


def test_a_deleted_interface_is_gone(netns):
    veths(netns, 2)
    index = netns.link("x0")["ifindex"]
    netns.run("ip", "link", "del", "x0")
    (results, missing) = lab(
        netns,
        {"op": "set_many", "items": [[{"name": "x0", "index": index}, {"mtu": 1400}],
                                     ["x1", {"mtu": 1400}]]},
        {"op": "get", "index": index},
    )
    gone, done = results
    assert gone["error"] == "Gone" and gone["errno"] == 19 and gone["target"] == "x0"
    assert done is None and netns.link("x1")["mtu"] == 1400
    assert missing is None


def test_answers_lost_to_a_full_receive_buffer_are_sent_again(netns):
    """With a receive buffer that holds a handful of acks, the kernel drops the rest (ENOBUFS);
    the batch still ends with every request done and acknowledged."""
    names = veths(netns, 40)
    items = [[name, 1300 + i] for i, name in enumerate(names)]
    (outcome,) = lab(netns, {"op": "overrun", "items": items})
    assert outcome["results"] == [None] * 40
    assert outcome["resent"] >= 1  # the buffer did overflow, and the lost ones went again
    shown = ip_links(netns)
    assert [shown[name]["mtu"] for name in names] == [1300 + i for i in range(40)]


def test_set_features_many_on_50_veths_with_one_fixed_feature(netns):
    names = veths(netns, 50)
    wanted = {"rx-gro": True, "tx-generic-segmentation": False}
    items = [[name, dict(wanted)] for name in names]
    items[7][1]["loopback"] = True  # "off [fixed]" on veth
    (results,) = lab(netns, {"op": "set_features_many", "items": items})
    fixed = results.pop(7)
    assert results == [None] * 49
    assert fixed["error"] == "Unsupported" and fixed["setting"] == "features.loopback"
    assert fixed["target"] == "x7" and "fixed" in fixed["reason"]
    for name in names:
        shown = netns.features(name)
        assert shown["generic-receive-offload"] == "on", name
        assert shown["generic-segmentation-offload"] == "off", name
        assert shown["loopback"] == "off", name
    assert netns.features("y0")["generic-receive-offload"] == "off"  # peers untouched


def test_set_features_many_unknown_names_and_dependencies_fail_their_item_only(netns):
    veths(netns, 3)
    (results,) = lab(
        netns,
        {"op": "set_features_many", "items": [
            ["x0", {"rx-teleport": True}],
            ["x1", {"tx-scatter-gather": False, "tx-tcp-segmentation": True}],
            ["x2", {"rx-gro": True}],
        ]},
    )
    unknown, dependency, done = results
    assert unknown["error"] == "Unsupported" and unknown["setting"] == "features.rx-teleport"
    assert dependency["error"] == "Refused"
    assert dependency["setting"] == "features.tx-tcp-segmentation"
    assert done is None and netns.features("x2")["generic-receive-offload"] == "on"
