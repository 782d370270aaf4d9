"""The ethtool netlink adapter against the real kernel, inside throwaway namespaces.

The adapter runs in the namespace (tests/integration/ethtool_lab.py under ``ip netns exec``);
``ethtool`` reading the same devices is the independent witness.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.integration import ethtool_lab
from tests.integration.ethtool_lab import ethtool_k_states
from tests.lab.netns import REPO, VENV_BIN, Netns, require_tools

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(bool(require_tools("ethtool", "ip")), reason="needs ethtool and ip"),
]

LAB = Path(ethtool_lab.__file__)


def adapter(netns: Netns, *ops: dict[str, Any]) -> list[dict[str, Any]]:
    """Run EthtoolNetlink operations inside the namespace, one socket for all of them."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = netns.run(str(VENV_BIN / "python"), str(LAB), json.dumps(list(ops)), env=env)
    return json.loads(proc.stdout)


def ok(result: dict[str, Any]) -> Any:
    assert "ok" in result, result
    return result["ok"]


def ifindex(netns: Netns, dev: str) -> int:
    return netns.link(dev)["ifindex"]


def ethtool_k(netns: Netns, dev: str) -> dict[str, tuple[bool, bool]]:
    """{kernel feature: (active, fixed)} as ``ethtool --json -k`` sees it."""
    return ethtool_k_states(netns.json("ethtool", "--json", "-k", dev)[0])


def as_ethtool(state: dict[str, list[str]], names) -> dict[str, tuple[bool, bool]]:
    active, changeable = set(state["active"]), set(state["changeable"])
    return {name: (name in active, name not in changeable) for name in names}


@pytest.fixture
def veth(netns: Netns) -> Netns:
    netns.veth("v0", "v1", queues=4)
    return netns


# --- features ----------------------------------------------------------------------------------


def test_dump_features_matches_ethtool_k(veth):
    veth.run("ethtool", "-K", "v1", "gro", "on", "gso", "off")
    (dump,) = adapter(veth, {"op": "dump_features"})
    states = ok(dump)
    assert set(states) == {str(ifindex(veth, dev)) for dev in ("lo", "v0", "v1")}
    for dev in ("lo", "v0", "v1"):
        expected = ethtool_k(veth, dev)
        assert len(expected) >= 50
        assert as_ethtool(states[str(ifindex(veth, dev))], expected) == expected, dev
    v1 = states[str(ifindex(veth, "v1"))]
    assert "rx-gro" in v1["active"] and "tx-generic-segmentation" not in v1["active"]
    assert veth.features("v1")["generic-receive-offload"] == "on"


def test_get_features_of_one_device_equals_its_dump_entry(veth):
    dump, one = adapter(veth, {"op": "dump_features"}, {"op": "get_features", "ifname": "v0"})
    assert ok(one) == ok(dump)[str(ifindex(veth, "v0"))]


def test_set_features_shows_in_ethtool_and_reverts(veth):
    wanted = {"rx-gro": True, "tx-generic-segmentation": False, "tx-gso-list": False}
    (result,) = adapter(veth, {"op": "set_features", "ifname": "v0", "values": wanted})
    assert ok(result) is None
    shown = veth.features("v0")
    assert shown["generic-receive-offload"] == "on"
    assert shown["generic-segmentation-offload"] == "off"
    assert shown["tx-gso-list"] == "off"
    assert veth.features("v1")["generic-receive-offload"] == "off"  # the peer is untouched

    back = {"rx-gro": False, "tx-generic-segmentation": True, "tx-gso-list": True}
    (result,) = adapter(veth, {"op": "set_features", "ifname": "v0", "values": back})
    assert ok(result) is None
    shown = veth.features("v0")
    assert (shown["generic-receive-offload"], shown["generic-segmentation-offload"]) == (
        "off",
        "on",
    )


def test_a_fixed_feature_raises_unsupported_unless_already_in_that_state(veth):
    assert ethtool_k(veth, "v0")["loopback"] == (False, True)  # off [fixed]
    on, off = adapter(
        veth,
        {"op": "set_features", "ifname": "v0", "values": {"loopback": True}},
        {"op": "set_features", "ifname": "v0", "values": {"loopback": False}},
    )
    assert on["error"] == "Unsupported" and on["setting"] == "features.loopback"
    assert "fixed" in on["reason"]
    assert ok(off) is None
    assert ethtool_k(veth, "v0")["loopback"] == (False, True)


def test_a_feature_held_off_by_a_dependency_is_refused(veth):
    # Without scatter-gather the kernel keeps TSO off but remembers the request.
    sg_off, tso_on = adapter(
        veth,
        {"op": "set_features", "ifname": "v0", "values": {"tx-scatter-gather": False}},
        {"op": "set_features", "ifname": "v0", "values": {"tx-tcp-segmentation": True}},
    )
    assert ok(sg_off) is None
    assert tso_on["error"] == "Refused" and tso_on["setting"] == "features.tx-tcp-segmentation"
    lines = veth.run("ethtool", "-k", "v0").stdout
    assert "tx-tcp-segmentation: off [requested on]" in lines
    (sg_on,) = adapter(
        veth, {"op": "set_features", "ifname": "v0", "values": {"tx-scatter-gather": True}}
    )
    assert ok(sg_on) is None
    assert veth.features("v0")["tx-tcp-segmentation"] == "on"


def test_an_unknown_feature_is_unsupported(veth):
    (result,) = adapter(
        veth, {"op": "set_features", "ifname": "v0", "values": {"rx-teleport": True}}
    )
    assert result["error"] == "Unsupported" and result["setting"] == "features.rx-teleport"


# --- channels ----------------------------------------------------------------------------------


def test_dump_and_set_channels_show_in_ethtool(veth):
    before, change, after = adapter(
        veth,
        {"op": "dump_channels"},
        {"op": "set_channels", "ifname": "v0", "values": {"rx": 2, "tx": 3}},
        {"op": "dump_channels"},
    )
    v0, v1, lo = (str(ifindex(veth, dev)) for dev in ("v0", "v1", "lo"))
    four = {"rx": 4, "tx": 4}
    assert ok(before) == {
        v0: {"current": four, "maximum": four},
        v1: {"current": four, "maximum": four},
    }
    assert lo not in ok(before)
    assert ok(change) is None
    assert ok(after)[v0] == {"current": {"rx": 2, "tx": 3}, "maximum": four}
    shown = veth.channels("v0")
    assert (shown["rx"], shown["tx"], shown["combined"]) == ("2", "3", "n/a")


def test_a_channel_count_above_the_maximum_is_refused(veth):
    (result,) = adapter(veth, {"op": "set_channels", "ifname": "v0", "values": {"rx": 5}})
    assert result["error"] == "Refused" and result["errno"] == 22  # EINVAL
    assert "exceeds maximum" in result["reason"]  # the kernel's extack message
    assert veth.channels("v0")["rx"] == "4"


def test_a_channel_kind_the_device_lacks_is_unsupported(veth):
    (result,) = adapter(veth, {"op": "set_channels", "ifname": "v0", "values": {"combined": 2}})
    assert result["error"] == "Unsupported" and result["setting"] == "channels.combined"
    assert veth.channels("v0")["combined"] == "n/a"


# --- rings and coalescing: no virtual NIC has them -------------------------------------------


def test_veth_has_no_rings_or_coalescing(veth):
    rings, coalesce, features, one_ring, one_coalesce = adapter(
        veth,
        {"op": "dump_rings"},
        {"op": "dump_coalesce"},
        {"op": "dump_features"},
        {"op": "get_rings", "ifname": "v0"},
        {"op": "get_coalesce", "ifname": "v0"},
    )
    assert ok(rings) == {} and ok(coalesce) == {}
    assert str(ifindex(veth, "v0")) in ok(features)  # the dumps did reach the device
    assert ok(one_ring) is None and ok(one_coalesce) is None
    for flag in ("-g", "-c"):
        witness = veth.run("ethtool", flag, "v0", check=False)
        assert witness.returncode != 0 and "Operation not supported" in witness.stderr


def test_setting_rings_or_coalescing_on_veth_is_unsupported(veth):
    rings, coalesce = adapter(
        veth,
        {"op": "set_rings", "ifname": "v0", "values": {"rx": 256}},
        {"op": "set_coalesce", "ifname": "v0", "values": {"rx-usecs": 10, "adaptive-rx": True}},
    )
    assert rings["error"] == "Unsupported" and rings["setting"] == "rings"
    assert coalesce["error"] == "Unsupported" and coalesce["errno"] == 95  # EOPNOTSUPP
    assert "EOPNOTSUPP" in coalesce["reason"]


# --- devices that went away, and many devices ----------------------------------------------------


def test_a_deleted_interface_is_gone(veth):
    index = ifindex(veth, "v0")
    veth.run("ip", "link", "del", "v0")
    results = adapter(
        veth,
        {"op": "get_features", "ifindex": index},
        {"op": "get_channels", "ifindex": index},
        {"op": "set_features", "ifindex": index, "values": {"rx-gro": True}},
        {"op": "set_channels", "ifindex": index, "values": {"rx": 1}},
        {"op": "set_coalesce", "ifindex": index, "values": {"rx-usecs": 1}},
        {"op": "dump_features"},
    )
    *gone, dump = results
    for result in gone:
        assert result.get("error") == "Gone" and result["errno"] == 19, result  # ENODEV
    assert str(index) not in ok(dump)


def test_one_dump_returns_all_of_200_veths(netns):
    batch = "".join(f"link add a{i} type veth peer name b{i}\n" for i in range(100))
    netns.run("ip", "-batch", "-", input=batch)
    features, channels = adapter(netns, {"op": "dump_features"}, {"op": "dump_channels"})
    links = {str(link["ifindex"]): link["ifname"] for link in netns.json("ip", "-j", "link")}
    assert len(links) == 201
    assert set(ok(features)) == set(links)
    assert set(ok(channels)) == {index for index, name in links.items() if name != "lo"}
    for index, name in sorted(links.items())[::50]:
        expected = ethtool_k(netns, name.split("@")[0])
        assert as_ethtool(ok(features)[index], expected) == expected, name
    assert features["seconds"] < 0.25  # ~5 ms here; a generous guard against per-device calls
