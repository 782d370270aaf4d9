"""The route and rule wire codec of nodenetd.kernel.routes, without a kernel: what goes on the
wire, what comes back, and how a Route or Rule reads."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import struct

import pytest

from nodenetd.kernel import routes as rt
from nodenetd.kernel.netlink import NLMSGHDR, encode_attrs, iter_attrs, nla
from nodenetd.kernel.routes import (
    FR_ACT_BLACKHOLE,
    RT_SCOPE_LINK,
    RTN_BLACKHOLE,
    RTN_LOCAL,
    RTPROT_NODENETD,
    RTPROT_STATIC,
    Nexthop,
    Route,
    Rule,
    decode_route,
    decode_rule,
    encode_route,
    encode_rule,
)

RTMSG = struct.Struct("=BBBBBBBBI")
RTNH = struct.Struct("=HBBi")


def message(payload: bytes, mtype: int = rt.RTM_NEWROUTE) -> bytes:
    return NLMSGHDR.pack(NLMSGHDR.size + len(payload), mtype, 0, 1, 0) + payload


def roundtrip_route(route: Route) -> Route | None:
    data = message(encode_route(route))
    return decode_route(data, 0, len(data))


def roundtrip_rule(rule: Rule) -> Rule | None:
    data = message(encode_rule(rule), rt.RTM_NEWRULE)
    return decode_rule(data, 0, len(data))


def attr_types(payload: bytes) -> list[int]:
    return [atype for atype, _start, _end in iter_attrs(payload, RTMSG.size, len(payload))]


# --------------------------------------------------------------------------------------------
# routes

ROUTES = [
    Route("0.0.0.0/0", "192.0.2.1", 3, metric=50),
    Route("::/0", "2001:db8::1", 4, metric=10),
    Route("10.0.0.0/8", "192.0.2.1", 3, table=1000, onlink=True, prefsrc="192.0.2.2"),
    Route("198.51.100.0/24", None, 7, scope=RT_SCOPE_LINK, protocol=RTPROT_STATIC),
    Route("10.30.0.0/16", "2001:db8::1", 3),  # IPv4 via an IPv6 gateway: RTA_VIA
    Route("203.0.113.0/24", type=RTN_BLACKHOLE),
    Route("2001:db8:1::/48", "fe80::1", 2, table=100),
    Route("10.1.0.0/16", "192.0.2.1", 3, tos=0x10, metric=2**32 - 1),
]


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_a_route_survives_encode_and_decode(route):
    back = roundtrip_route(route)

    assert back == route
    assert str(back) == str(route)


def test_the_wire_form_of_a_default_route():
    payload = encode_route(Route("0.0.0.0/0", "192.0.2.1", 3, metric=50))

    family, dst_len, src_len, tos, table, protocol, scope, rtype, flags = RTMSG.unpack_from(payload)
    assert (family, dst_len, src_len, tos) == (socket.AF_INET, 0, 0, 0)
    assert (table, protocol, scope, rtype, flags) == (254, 177, 0, 1, 0)
    # RTA_TABLE, RTA_GATEWAY, RTA_OIF, RTA_PRIORITY; no RTA_DST for the default route
    assert attr_types(payload) == [15, 5, 4, 6]


def test_a_table_above_255_travels_only_in_rta_table():
    big = encode_route(Route("10.0.0.0/8", "192.0.2.1", 3, table=1000))
    small = encode_route(Route("10.0.0.0/8", "192.0.2.1", 3, table=100))

    assert RTMSG.unpack_from(big)[4] == 0  # RT_TABLE_UNSPEC in the header
    assert RTMSG.unpack_from(small)[4] == 100
    start = next(s for t, s, _ in iter_attrs(big, RTMSG.size, len(big)) if t == 15)
    assert struct.unpack_from("=I", big, start) == (1000,)


def test_only_onlink_of_the_nexthop_flags_is_sent():
    route = Route("10.0.0.0/8", "203.0.113.1", 3, onlink=True, linkdown=True, dead=True)

    assert RTMSG.unpack_from(encode_route(route))[8] == rt.RTNH_F_ONLINK


def test_an_ipv4_route_via_an_ipv6_gateway_uses_rta_via():
    payload = encode_route(Route("10.30.0.0/16", "2001:db8::1", 3))

    (start, end) = next(
        (s, e) for t, s, e in iter_attrs(payload, RTMSG.size, len(payload)) if t == 18
    )
    assert payload[start:end] == struct.pack("=H", socket.AF_INET6) + (
        ipaddress.ip_address("2001:db8::1").packed
    )
    assert 5 not in attr_types(payload)


def kernel_route(flags: int = 0, family: int = socket.AF_INET, attrs: bytes = b"") -> bytes:
    """An RTM_NEWROUTE as a dump returns it: 192.0.2.0/24 via 192.0.2.1 dev 3, table main."""
    header = RTMSG.pack(family, 24, 0, 0, 254, 177, 0, 1, flags)
    body = attrs or (
        nla(15, struct.pack("=I", 254))
        + nla(1, bytes([198, 51, 100, 0]))
        + nla(5, bytes([192, 0, 2, 1]))
        + nla(4, struct.pack("=I", 3))
    )
    return message(header + body)


def test_linkdown_and_dead_are_read_from_the_flags_and_ignored_by_equality():
    data = kernel_route(rt.RTNH_F_LINKDOWN | rt.RTNH_F_DEAD)

    route = decode_route(data, 0, len(data))

    assert (route.linkdown, route.dead, route.onlink) == (True, True, False)
    assert route == Route("198.51.100.0/24", "192.0.2.1", 3)
    assert str(route).endswith("proto 177 dead linkdown")


def test_cloned_entries_and_other_families_are_not_routes():
    cloned = kernel_route(rt.RTM_F_CLONED)
    multicast_routing = kernel_route(family=128)  # RTNL_FAMILY_IPMR

    assert decode_route(cloned, 0, len(cloned)) is None
    assert decode_route(multicast_routing, 0, len(multicast_routing)) is None


def test_a_multipath_route_is_read_with_its_nexthops_and_not_written():
    hops = b""
    for flags, weight, index, gateway in ((0, 2, 3, "192.0.2.1"), (16, 1, 5, "198.51.100.1")):
        attrs = nla(5, ipaddress.ip_address(gateway).packed)
        hops += RTNH.pack(RTNH.size + len(attrs), flags, weight - 1, index) + attrs
    data = kernel_route(attrs=nla(15, struct.pack("=I", 254)) + nla(9, hops))

    route = decode_route(data, 0, len(data))

    assert (route.gateway, route.oif) == (None, None)
    assert route.nexthops == (
        Nexthop(ipaddress.ip_address("192.0.2.1"), 3, weight=2),
        Nexthop(ipaddress.ip_address("198.51.100.1"), 5),
    )
    assert route.nexthops[1].linkdown
    assert str(route).endswith(
        "nexthop via 192.0.2.1 dev-index 3 weight 2 "
        "nexthop via 198.51.100.1 dev-index 5 weight 1 linkdown"
    )
    with pytest.raises(ValueError, match="multipath"):
        encode_route(route)


def test_kernel_routes_keep_their_values_as_reported():
    """IPv6 metric 0 becomes 1024 for what nodenetd asks, but the kernel's own local routes
    sit at metric 0 and must read as such."""
    header = RTMSG.pack(socket.AF_INET6, 128, 0, 0, 255, 2, 0, RTN_LOCAL, 0)
    body = nla(15, struct.pack("=I", 255)) + nla(1, ipaddress.ip_address("::1").packed)
    data = message(header + body + nla(6, struct.pack("=I", 0)))

    route = decode_route(data, 0, len(data))

    assert (route.metric, route.table, route.type) == (0, 255, RTN_LOCAL)
    assert str(route) == "local ::1/128 table local metric 0 proto kernel"


def test_ipv6_metric_0_is_what_the_kernel_stores_1024():
    assert Route("::/0", "2001:db8::1", 4).metric == 1024
    assert Route("0.0.0.0/0", "192.0.2.1", 3).metric == 0


def test_addresses_given_as_text_are_parsed():
    route = Route("10.0.0.0/8", "192.0.2.1", 3, prefsrc="192.0.2.2")

    assert route.dst == ipaddress.ip_network("10.0.0.0/8")
    assert route.gateway == ipaddress.ip_address("192.0.2.1")
    assert route.prefsrc == ipaddress.ip_address("192.0.2.2")
    assert route.family == socket.AF_INET
    assert Route("::/0", "::1", 1).family == socket.AF_INET6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dst": "10.0.0.1/8"}, "host bits set"),
        ({"dst": "::/0", "gateway": "192.0.2.1"}, "IPv6 route cannot go via an IPv4"),
        ({"dst": "10.0.0.0/8", "prefsrc": "2001:db8::1"}, "not of the family"),
        ({"dst": "10.0.0.0/8", "gateway": "not-an-address"}, "not an IP address"),
        ({"dst": "10.0.0.0/8", "table": 0}, "table must be within 1"),
        ({"dst": "10.0.0.0/8", "metric": -1}, "metric must be within"),
        ({"dst": "10.0.0.0/8", "oif": 0}, "oif must be within 1"),
        ({"dst": "10.0.0.0/8", "oif": True}, "oif must be an int"),
        ({"dst": "::/0", "scope": RT_SCOPE_LINK}, "IPv6 routes have no scope"),
        ({"dst": "::/0", "tos": 4}, "IPv6 routes have no tos"),
        ({"dst": 17}, "must be an IP network"),
    ],
)
def test_a_route_that_cannot_be_is_refused_when_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Route(**kwargs)


def test_route_text_reads_like_iproute2():
    route = Route("0.0.0.0/0", "192.0.2.1", 3, metric=50)

    assert str(route) == "default via 192.0.2.1 dev-index 3 table main metric 50 proto 177"
    named = dataclasses.replace(route, dev="eth0")
    assert str(named) == "default via 192.0.2.1 dev eth0 table main metric 50 proto 177"
    assert named == route  # the name is a label
    assert str(Route("203.0.113.0/24", type=RTN_BLACKHOLE, table=1000)) == (
        "blackhole 203.0.113.0/24 table 1000 metric 0 proto 177"
    )
    assert str(Route("10.0.0.0/8", None, 2, scope=RT_SCOPE_LINK, protocol=4, tos=8)) == (
        "10.0.0.0/8 tos 0x08 dev-index 2 table main metric 0 proto static scope link"
    )


def test_the_setting_an_error_names():
    assert Route("0.0.0.0/0", "192.0.2.1", 3, metric=50).setting() == (
        "route default via 192.0.2.1 metric 50"
    )
    in_table = Route("2001:db8::/32", "2001:db8::1", 3, table=100)
    assert in_table.setting() == "route 2001:db8::/32 via 2001:db8::1 table 100 metric 1024"
    assert in_table.setting(with_table=False) == "route 2001:db8::/32 via 2001:db8::1 metric 1024"


def test_the_key_is_what_replace_swaps():
    a = Route("0.0.0.0/0", "192.0.2.1", 3, metric=50)
    b = Route("0.0.0.0/0", "198.51.100.1", 5, metric=50)

    assert a.key == b.key == (socket.AF_INET, ipaddress.ip_network("0.0.0.0/0"), 254, 50, 0)
    assert a != b
    assert len({a, b, Route("0.0.0.0/0", "192.0.2.1", 3, metric=50)}) == 2  # hashable


# --------------------------------------------------------------------------------------------
# rules

RULES = [
    Rule(socket.AF_INET, 1000, 100, oif="u0"),
    Rule(socket.AF_INET, 1001, 1000, src="192.0.2.0/24"),
    Rule(socket.AF_INET6, 1000, 254, iif="lo", src="2001:db8:20::/64"),
    Rule(socket.AF_INET, 2000, 100, fwmark=0x3, fwmask=0xFF),
    Rule(socket.AF_INET6, 2001, 100, dst="2001:db8::/32", invert=True, protocol=RTPROT_STATIC),
    Rule(socket.AF_INET, 3000, 0, action=FR_ACT_BLACKHOLE),
]


@pytest.mark.parametrize("rule", RULES, ids=str)
def test_a_rule_survives_encode_and_decode(rule):
    assert roundtrip_rule(rule) == rule


def test_the_wire_form_of_a_source_rule():
    payload = encode_rule(Rule(socket.AF_INET, 1001, 1000, src="192.0.2.0/24"))

    family, dst_len, src_len, _tos, table, _r1, _r2, action, flags = RTMSG.unpack_from(payload)
    assert (family, dst_len, src_len, table, action, flags) == (socket.AF_INET, 0, 24, 0, 1, 0)
    # FRA_PRIORITY, FRA_TABLE, FRA_SRC, FRA_PROTOCOL
    assert attr_types(payload) == [6, 15, 2, 21]


def test_a_kernel_rule_without_priority_or_protocol():
    """The local rule at 0 comes without FRA_PRIORITY; rules iproute2 adds without
    'protocol' have none either."""
    header = RTMSG.pack(socket.AF_INET, 0, 0, 0, 255, 0, 0, 1, 0)
    data = message(header + nla(15, struct.pack("=I", 255)), rt.RTM_NEWRULE)

    rule = decode_rule(data, 0, len(data))

    assert (rule.priority, rule.table, rule.protocol) == (0, 255, 0)
    assert str(rule) == "0: from all lookup local proto 0"


def test_detached_and_other_families_when_decoding_rules():
    body = nla(6, struct.pack("=I", 10)) + nla(15, struct.pack("=I", 100))
    detached = message(
        RTMSG.pack(socket.AF_INET, 0, 0, 0, 100, 0, 0, 1, rt.FIB_RULE_OIF_DETACHED)
        + body
        + encode_attrs(rt._fra, [("FRA_OIFNAME", "u9")]),
        rt.RTM_NEWRULE,
    )
    ipmr = message(RTMSG.pack(128, 0, 0, 0, 100, 0, 0, 1, 0) + body, rt.RTM_NEWRULE)

    rule = decode_rule(detached, 0, len(detached))
    assert rule.detached
    assert rule == Rule(socket.AF_INET, 10, 100, oif="u9", protocol=0)
    assert str(rule).endswith("[detached]")
    assert decode_rule(ipmr, 0, len(ipmr)) is None


def test_rule_text_reads_like_ip_rule():
    assert str(RULES[0]) == "1000: from all oif u0 lookup 100 proto 177"
    assert str(RULES[2]) == "1000: from 2001:db8:20::/64 iif lo lookup main proto 177"
    assert str(RULES[3]) == "2000: from all fwmark 0x3/0xff lookup 100 proto 177"
    assert str(RULES[4]) == "2001: not from all to 2001:db8::/32 lookup 100 proto static"
    assert str(RULES[5]) == "3000: from all blackhole proto 177"


def test_a_fwmark_without_a_mask_matches_all_32_bits_as_the_kernel_stores_it():
    assert Rule(socket.AF_INET, 1, 100, fwmark=7).fwmask == 0xFFFFFFFF
    assert (
        str(Rule(socket.AF_INET, 1, 100, fwmark=7)) == "1: from all fwmark 0x7 lookup 100 proto 177"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"family": socket.AF_UNSPEC}, "AF_INET or AF_INET6"),
        ({"src": "2001:db8::/32"}, "not an IPv4 network"),
        ({"src": "192.0.2.1/24"}, "host bits set"),
        ({"oif": "a-name-longer-than-15"}, "interface name"),
        ({"table": 0}, "needs a table"),
        ({"priority": 2**32}, "priority must be within"),
    ],
)
def test_a_rule_that_cannot_be_is_refused_when_built(kwargs, message):
    fields = {"family": socket.AF_INET, "priority": 1, "table": 100, **kwargs}
    with pytest.raises(ValueError, match=message):
        Rule(**fields)


def test_rules_are_owned_by_nodenetd_by_default():
    assert Rule(socket.AF_INET, 1, 100).protocol == RTPROT_NODENETD == 177


# --------------------------------------------------------------------------------------------
# the numbers, against an independent copy of the uapi headers


def _numbers(nla_map) -> dict[str, int]:
    if isinstance(nla_map[0][0], str):  # pyroute2's positional form: (name, format)
        return {entry[0]: number for number, entry in enumerate(nla_map)}
    return {name: number for number, name, *_ in nla_map}


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (rt._rta, ("pyroute2.netlink.rtnl.rtmsg", "rtmsg")),
        (rt._fra, ("pyroute2.netlink.rtnl.fibmsg", "fibmsg")),
    ],
    ids=["rtmsg", "fibmsg"],
)
def test_attribute_numbers_agree_with_pyroute2(ours, theirs):
    module = pytest.importorskip(theirs[0])
    reference = _numbers(getattr(module, theirs[1]).nla_map)

    for number, name, _format in ours.nla_map:
        assert reference[name] == number, name
