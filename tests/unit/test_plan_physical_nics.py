"""Planning rings and coalescing, which no virtual NIC has, against ethtool-netlink replies
recorded for ixgbe and mlx5 (tests/fixtures/ethtool). Only the kernel is replayed; the
profile loader, selector binding and planner are the real ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodenetd.config.loader import ProfileLibrary, load_profile
from nodenetd.config.resolve import resolve_profiles
from nodenetd.kernel.ethtool import (
    decode_messages,
    ethtool_coalesce_msg,
    ethtool_rings_msg,
    parse_coalesce,
    parse_limits,
)
from nodenetd.kernel.links import Link
from nodenetd.tuning.desired import bind
from nodenetd.tuning.planner import plan

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ethtool"


def recorded(name: str, msg_class, parse) -> dict:
    text = (FIXTURES / name).read_text()
    data = bytes.fromhex("".join(line for line in text.splitlines() if not line.startswith("#")))
    return {reply.ifindex: parse(reply) for reply in decode_messages(data, msg_class)}


class RecordedEthtool:
    """The dumps a physical host answered, replayed."""

    def dump_rings(self):
        return recorded("rings_dump.hex", ethtool_rings_msg, parse_limits)

    def dump_coalesce(self):
        return recorded("coalesce_dump.hex", ethtool_coalesce_msg, parse_coalesce)


class RecordedSession:
    """What the setting kinds use of a KernelSession: cached dumps, links and ethtool."""

    def __init__(self, links: dict[str, Link]):
        self._links = links
        self._cache: dict = {}
        self.ethtool = RecordedEthtool()

    def cached(self, name, load):
        if name not in self._cache:
            self._cache[name] = load()
        return self._cache[name]

    def links(self):
        return self._links

    def ethtool_state(self, kind):
        return self.cached(kind, getattr(self.ethtool, f"dump_{kind}"))


def nic(index: int, name: str) -> Link:
    return Link(index=index, name=name, kind=None, slave_kind=None, master=None, mtu=1500,
                min_mtu=68, max_mtu=9600, txqueuelen=1000, admin_up=True, operstate="UP",
                carrier=True, mac=f"00:1b:21:00:00:0{index}", perm_mac=None,
                parent_bus="pci")


@pytest.fixture
def planned(tmp_path):
    profile = tmp_path / "nics.yaml"
    profile.write_text(
        "interfaces:\n"
        "  - match: {kind: [physical]}\n"
        "    rings: {rx: max, tx: 2048}\n"
        "    coalesce: {adaptive-rx: false, rx-usecs: 50}\n"
        "  - match: {name: eth1}\n"
        "    rings: {tx: 8192}\n"
    )
    resolved = resolve_profiles([load_profile(profile)], ProfileLibrary([tmp_path]))
    links = {link.name: link for link in (nic(2, "eth0"), nic(3, "eth1"), nic(4, "ens1f0np0"))}
    result = plan(bind(resolved, links), RecordedSession(links))
    changes = {(c.target.device, c.kind, c.key): (c.current, c.desired) for c in result.changes}
    skipped = {(s.target.device, s.kind, s.key): s.reason for s in result.skipped}
    in_sync = {(s.target.device, s.kind, s.key): s.value for s in result.in_sync}
    return changes, skipped, in_sync


def test_rings_max_resolves_to_each_drivers_maximum(planned):
    changes, _, _ = planned
    assert changes[("eth0", "rings", "rx")] == (512, 4096)  # ixgbe
    assert changes[("ens1f0np0", "rings", "rx")] == (1024, 8192)  # mlx5
    assert changes[("eth0", "rings", "tx")] == (512, 2048)


def test_a_ring_above_the_device_maximum_is_skipped_not_attempted(planned):
    changes, skipped, _ = planned
    assert ("eth1", "rings", "tx") not in changes
    assert skipped[("eth1", "rings", "tx")] == "8192 is above the device maximum 4096"


def test_already_at_target_is_in_sync(planned):
    _, _, in_sync = planned
    assert in_sync[("eth1", "rings", "rx")] == 4096  # eth1 already runs rx at its max


def test_coalescing_keys_each_driver_has(planned):
    changes, skipped, _ = planned
    assert changes[("ens1f0np0", "coalesce", "adaptive-rx")] == (True, False)
    assert changes[("ens1f0np0", "coalesce", "rx-usecs")] == (8, 50)
    assert changes[("eth0", "coalesce", "rx-usecs")] == (1, 50)
    # ixgbe has no adaptive mode: skipped with a reason, never sent
    assert skipped[("eth0", "coalesce", "adaptive-rx")] == "the driver does not report it"
    # eth1 is not in the recorded coalescing dump at all
    assert skipped[("eth1", "coalesce", "rx-usecs")] == "the driver does not support coalescing"
