"""Sysctl values within the kernel's types, and caps kept at or above what they cap."""

from __future__ import annotations

from nodenetd.config.model import Origin
from nodenetd.errors import Unsupported
from nodenetd.tuning.constraints import clamp_fields, keep_limits_consistent
from nodenetd.tuning.plan import Change, InSync, Plan, Target

NODE = Target()
WHY = Origin("throughput")


def test_int_sysctls_are_clamped_to_the_c_int_range_and_long_ones_are_not():
    assert clamp_fields("net.core.somaxconn", (99999999999,)) == (
        (2147483647,), "net.core.somaxconn: 99999999999 clamped to 2147483647 "
                       "(the kernel's range -2147483648..2147483647)")
    assert clamp_fields("net.ipv4.tcp_mem", (99999999999, 1, 2)) == ((99999999999, 1, 2), "")
    assert clamp_fields("net.netfilter.nf_conntrack_max", (-5,))[0] == (0,)
    assert clamp_fields("net.ipv4.tcp_congestion_control", ("bbr",)) == (("bbr",), "")


def reader(values):
    def read(key):
        if key not in values:
            raise Unsupported(key, "sysctl", "no such key")
        return values[key]
    return read


def test_a_raised_tcp_maximum_raises_the_socket_cap_with_its_reason():
    plan = Plan(changes=[Change("sysctl", NODE, "net.ipv4.tcp_rmem", WHY, "4096 131072 6291456",
                                "4096 131072 16777216")])

    keep_limits_consistent(plan, reader({"net.core.rmem_max": "212992"}))

    added = plan.changes[-1]
    assert (added.key, added.current, added.desired) == ("net.core.rmem_max", "212992",
                                                         "16777216")
    assert added.why.rule == "keeps net.core.rmem_max >= net.ipv4.tcp_rmem max"


def test_a_planned_cap_below_the_maximum_is_raised_and_a_higher_one_kept():
    low = Change("sysctl", NODE, "net.core.wmem_max", WHY, "212992", "1048576")
    high = Change("sysctl", NODE, "net.core.rmem_max", WHY, "212992", "33554432")
    plan = Plan(changes=[low, high],
                in_sync=[InSync("sysctl", NODE, "net.ipv4.tcp_wmem", WHY, "4096 16384 16777216"),
                         InSync("sysctl", NODE, "net.ipv4.tcp_rmem", WHY, "4096 87380 6291456")])

    keep_limits_consistent(plan, reader({}))

    by_key = {c.key: c.desired for c in plan.changes}
    assert by_key == {"net.core.wmem_max": "16777216", "net.core.rmem_max": "33554432"}


def test_neighbour_thresholds_stay_ordered_and_absent_keys_are_left_alone():
    plan = Plan(changes=[Change("sysctl", NODE, "net.ipv4.neigh.default.gc_thresh2", WHY,
                                "512", "28672")])

    keep_limits_consistent(plan, reader({"net.ipv4.neigh.default.gc_thresh3": "1024"}))

    assert {c.key: c.desired for c in plan.changes}["net.ipv4.neigh.default.gc_thresh3"] == \
        "28672"
    untouched = Plan(changes=[Change("sysctl", NODE, "net.ipv4.tcp_rmem", WHY, "1 2 3",
                                     "4096 131072 16777216")])
    keep_limits_consistent(untouched, reader({}))  # a pod's namespace: no net.core keys
    assert len(untouched.changes) == 1
