"""The qdisc kind's diff: what reads as in sync (a correct tree is never touched), and which
requests turn a tree into another (change in place, graft with a fresh handle, htb classes
and filters diffed, mq children, the ingress policer replaced on its own node), against
kernel views written down here."""

from __future__ import annotations

import pytest

from nodenetd.errors import Unsupported
from nodenetd.kernel import tc
from nodenetd.kernel.netlink import decode_attrs
from nodenetd.kernel.tc import INGRESS_HANDLE, TC_H_INGRESS, TC_H_ROOT, Filter, Qdisc, TcClass
from nodenetd.tuning.kinds import qdisc as kind
from nodenetd.tuning.kinds.qdisc import DeviceTc, QdiscKind, TcView
from nodenetd.tuning.plan import Target

ETH0 = Target("eth0", 2)
FQ_NOW = {"limit": 10000, "flow_limit": 100, "quantum": 3028, "initial_quantum": 15140,
          "pacing": True, "maxrate": tc.UNLIMITED, "buckets": 1024, "refill_delay": 40000,
          "orphan_mask": 1023, "low_rate_threshold": 68750, "ce_threshold": tc.UNLIMITED,
          "timer_slack": 10000, "horizon": 10_000_000, "horizon_drop": True}


def view(*qdiscs: Qdisc, classes=(), filters=(), queues: int = 4) -> TcView:
    devices = {2: DeviceTc(2, list(qdiscs))}
    result = TcView(None, devices)  # type: ignore[arg-type]
    result._classes[2] = list(classes)
    for node in filters:
        result._filters.setdefault((2, node.parent), []).append(node)
    result._filters.setdefault((2, 0x10000), [])
    result._filters.setdefault((2, INGRESS_HANDLE), [])
    result._txq = {2: queues}
    return result


def root(kind_: str, handle: int = 0x10000, **options) -> Qdisc:
    return Qdisc(2, handle, TC_H_ROOT, kind_, options)


def what(requests) -> list[tuple[str, str, str, str]]:
    """(message, parent, handle, kind) of each request, readably."""
    names = {tc.RTM_NEWQDISC: "qdisc", tc.RTM_DELQDISC: "del qdisc", tc.RTM_NEWTCLASS: "class",
             tc.RTM_DELTCLASS: "del class", tc.RTM_NEWTFILTER: "filter",
             tc.RTM_DELTFILTER: "del filter"}
    out = []
    for request in requests:
        _f, _a, _b, _i, handle, parent, _info = tc._TCMSG.unpack_from(request.payload)
        attrs = decode_attrs(tc._tca, request.payload, tc._TCMSG.size, len(request.payload))
        out.append((names[request.msg_type], tc.handle_text(parent), tc.handle_text(handle),
                    attrs.get("TCA_KIND", "")))
    return out


HTB_WANT = {
    "kind": "htb", "options": {"default": 0x20, "r2q": 10},
    "classes": [
        {"minor": 1, "parent": 0, "name": "(all)", "rate": 6_250_000, "ceil": 6_250_000,
         "burst": 6250, "cburst": 6250, "prio": 0, "quantum": 200_000},
        {"minor": 0x10, "parent": 1, "name": "voice", "rate": 1_250_000, "ceil": 6_250_000,
         "burst": 1600, "cburst": 6250, "prio": 0, "quantum": 125_000},
        {"minor": 0x20, "parent": 1, "name": "bulk", "rate": 5_000_000, "ceil": 6_250_000,
         "burst": 5000, "cburst": 6250, "prio": 0, "quantum": 200_000}],
    "filters": [{"prio": 1, "protocol": "ip", "match": {"dscp": 46}, "flowid": 0x10},
                {"prio": 2, "protocol": "ipv6", "match": {"dscp": 46}, "flowid": 0x10}],
}


def htb_kernel(voice_rate: int = 1_250_000, dscp: int = 46):
    """The kernel's view of HTB_WANT (as the dumps report it)."""
    classes = []
    for c in HTB_WANT["classes"]:
        rate = voice_rate if c["minor"] == 0x10 else c["rate"]
        options = {k: c[k] for k in ("ceil", "burst", "cburst", "prio", "quantum")}
        options.update(rate=rate, level=0)
        parent = TC_H_ROOT if c["parent"] == 0 else 0x10000 | c["parent"]
        classes.append(TcClass(2, 0x10000 | c["minor"], parent, "htb", 0, options))
    filters = [Filter(2, 0x10000, 1, "ip", "u32", 0x80000800,
                      {"keys": tc.u32_keys({"dscp": dscp}, "ip"), "flowid": 0x10010,
                       "mark": None, "police": None, "opaque": None}),
               Filter(2, 0x10000, 2, "ipv6", "u32", 0x80100800,
                      {"keys": tc.u32_keys({"dscp": 46}, "ipv6"), "flowid": 0x10010,
                       "mark": None, "police": None, "opaque": None})]
    return view(root("htb", default=0x20, r2q=10, direct_qlen=1000), classes=classes,
                filters=filters)


# -- reading and comparing -------------------------------------------------------------------


def test_the_kernel_default_root_reads_as_default():
    assert kind.root_value(view(Qdisc(2, 0, TC_H_ROOT, "noqueue", {})), ETH0) == {
        "kind": "noqueue", "default": True}
    never_up = kind.root_value(view(), ETH0)
    assert never_up == {"kind": "noop", "default": True}
    assert QdiscKind().in_sync({"kind": "noqueue", "default": True}, never_up)  # restored
    desired = {"kind": "default", "default": True}
    assert QdiscKind().in_sync({"kind": "mq", "default": True}, desired)
    assert not QdiscKind().in_sync({"kind": "fq", "options": FQ_NOW}, desired)


def test_options_left_out_are_the_kernels_business():
    current = kind.root_value(view(root("fq", **FQ_NOW)), ETH0)
    assert QdiscKind().in_sync(current, {"kind": "fq", "options": {"flow_limit": 100}})
    assert not QdiscKind().in_sync(current, {"kind": "fq", "options": {"flow_limit": 200}})
    assert not QdiscKind().in_sync(current, {"kind": "fq_codel", "options": {}})


def test_quantised_values_compare_as_the_kernel_keeps_them():
    codel = {"kind": "fq_codel", "options": {"target": 5000, "interval": 100_000}}
    assert QdiscKind().in_sync(codel, {"kind": "fq_codel", "options": {"target": 5000}})
    tbf = {"kind": "tbf", "options": {"rate": 125_000_000, "burst": 65528, "limit": 10 ** 6}}
    # at 1gbit a 64 ns tick is 8 bytes: 64kb reads back as the tick's first byte count
    assert QdiscKind().in_sync(tbf, {"kind": "tbf", "options": {
        "rate": 125_000_000, "burst": 65536, "limit": 10 ** 6}})
    assert not QdiscKind().in_sync(tbf, {"kind": "tbf", "options": {
        "rate": 125_000_000, "burst": 70000, "limit": 10 ** 6}})


def test_htb_read_back_is_in_sync_and_names_do_not_matter():
    current = kind.root_value(htb_kernel(), ETH0)
    assert [c["minor"] for c in current["classes"]] == [1, 0x10, 0x20]
    assert "name" not in current["classes"][0]
    assert current["filters"][0] == {"prio": 1, "protocol": "ip",
                                     "keys": [[0x00FC0000, 0x00B80000, 0, 0]], "flowid": 0x10}
    assert QdiscKind().in_sync(current, HTB_WANT)
    assert not QdiscKind().in_sync(kind.root_value(htb_kernel(voice_rate=1_000_000), ETH0),
                                   HTB_WANT)
    assert not QdiscKind().in_sync(kind.root_value(htb_kernel(dscp=40), ETH0), HTB_WANT)


def test_trees_nodenetd_cannot_put_back_are_foreign():
    with pytest.raises(Unsupported, match="netem"):
        kind.root_value(view(Qdisc(2, 0x10000, TC_H_ROOT, "netem", None)), ETH0)
    leafy = htb_kernel()
    leafy.devices[2].qdiscs.append(Qdisc(2, 0x50000, 0x10010, "pfifo", {"limit": 10}))
    with pytest.raises(Unsupported, match="leaf qdiscs"):
        kind.root_value(leafy, ETH0)
    with pytest.raises(Unsupported, match="clsact"):
        kind._ingress_state(view(Qdisc(2, INGRESS_HANDLE, TC_H_INGRESS, "clsact", {})), ETH0)


def test_mq_children_by_queue():
    mq = view(root("mq"), *[Qdisc(2, 0x8001 + q << 16, 0x10000 | q, "fq", FQ_NOW)
                            for q in range(1, 5)])
    current = kind.root_value(mq, ETH0)
    assert list(current["children"]) == ["1", "2", "3", "4"]
    assert QdiscKind().in_sync(current, {"kind": "mq", "child": {"kind": "fq", "options": {
        "horizon": 10_000_000}}})
    assert not QdiscKind().in_sync(current, {"kind": "mq", "child": {
        "kind": "default", "default": True}})


# -- requests --------------------------------------------------------------------------------


def requests_for(v: TcView, want: dict):
    return what(kind.root_requests(v, ETH0, kind.root_value(v, ETH0), want))


def test_same_kind_is_changed_in_place_with_its_own_handle():
    v = view(root("fq", handle=0x80010000, **dict(FQ_NOW, flow_limit=50)))
    assert requests_for(v, {"kind": "fq", "options": {"flow_limit": 100}}) == [
        ("qdisc", "root", "8001:", "fq")]


def test_another_kind_is_grafted_with_an_unused_handle():
    v = view(root("fq", handle=0x10000, **FQ_NOW))
    assert requests_for(v, {"kind": "tbf", "options": {
        "rate": 6_250_000, "burst": 65536, "limit": 378_036}}) == [
        ("qdisc", "root", "2:", "tbf")]


def test_fq_codel_flows_need_a_new_qdisc():
    now = {"target": 5000, "interval": 100_000, "limit": 10240, "flows": 1024, "ecn": True}
    v = view(root("fq_codel", **now))
    assert requests_for(v, {"kind": "fq_codel", "options": {"flows": 2048}}) == [
        ("qdisc", "root", "2:", "fq_codel")]
    change = kind.root_requests(v, ETH0, kind.root_value(v, ETH0),
                                {"kind": "fq_codel", "options": {"flows": 1024, "limit": 500}})
    attrs = decode_attrs(tc._tca, change[0].payload, tc._TCMSG.size, len(change[0].payload))
    sent = decode_attrs(tc._fq_codel, attrs["TCA_OPTIONS"], 0, len(attrs["TCA_OPTIONS"]))
    assert sent == {"limit": 500}  # flows unchanged: not sent (refused on change)


def test_back_to_the_default_deletes_the_root():
    assert requests_for(view(root("tbf", rate=1, burst=1600, limit=1)),
                        {"kind": "noqueue", "default": True}) == [("del qdisc", "root", "0:", "")]


def test_htb_share_change_touches_only_that_class():
    want = dict(HTB_WANT, classes=[dict(c, rate=2_500_000) if c["minor"] == 0x10 else c
                                   for c in HTB_WANT["classes"]])
    assert requests_for(htb_kernel(), want) == [("class", "1:1", "1:10", "htb")]


def test_htb_filter_group_change_is_delete_then_add():
    want = dict(HTB_WANT, filters=[{"prio": 1, "protocol": "ip", "match": {"dscp": 40},
                                    "flowid": 0x10}, HTB_WANT["filters"][1]])
    assert requests_for(htb_kernel(), want) == [
        ("del filter", "1:", "0:", "u32"), ("filter", "1:", "0:", "u32")]


def test_htb_default_class_change_grafts_a_whole_new_tree():
    want = dict(HTB_WANT, options={"default": 0x10, "r2q": 10})
    assert requests_for(htb_kernel(), want) == [
        ("qdisc", "root", "2:", "htb"), ("class", "root", "2:1", "htb"),
        ("class", "2:1", "2:10", "htb"), ("class", "2:1", "2:20", "htb"),
        ("filter", "2:", "0:", "u32"), ("filter", "2:", "0:", "u32")]


def test_stale_classes_go_leaves_first_after_their_filters():
    kernel = htb_kernel()
    kernel._classes[2].append(TcClass(2, 0x10030, 0x10001, "htb", 0, {
        "rate": 1, "ceil": 1, "burst": 1600, "cburst": 1600, "prio": 0, "quantum": 1000}))
    kernel._filters[(2, 0x10000)].append(Filter(2, 0x10000, 3, "ip", "u32", 0x80200800, {
        "keys": tc.u32_keys({"dscp": 8}, "ip"), "flowid": 0x10030, "mark": None,
        "police": None, "opaque": None}))
    assert requests_for(kernel, HTB_WANT) == [
        ("del filter", "1:", "0:", "u32"), ("del class", "0:", "1:30", "")]


def test_mq_children_are_changed_or_grafted_per_queue():
    defaults = [Qdisc(2, 0, 0x10000 | q, "pfifo_fast", {}) for q in range(1, 5)]
    v = view(root("mq"), *defaults, queues=6)
    assert requests_for(v, {"kind": "mq", "child": {"kind": "fq", "options": {}}}) == [
        ("qdisc", f"1:{q}", "0:", "fq") for q in range(1, 7)]  # inactive queues too
    fresh = view(Qdisc(2, 0, TC_H_ROOT, "mq", {}), *defaults, queues=2)
    assert requests_for(fresh, {"kind": "mq", "child": {"kind": "fq", "options": {}}}) == [
        ("qdisc", "root", "1:", "mq"), ("qdisc", "1:1", "0:", "fq"), ("qdisc", "1:2", "0:", "fq")]


def test_mq_back_to_default_children_needs_a_new_mq():
    ours = [Qdisc(2, 0x80010000 + (q << 16), 0x10000 | q, "fq", FQ_NOW) for q in range(1, 3)]
    v = view(root("mq"), *ours, queues=2)
    want = {"kind": "mq", "children": {"1": {"kind": "pfifo_fast", "default": True},
                                       "2": {"kind": "pfifo_fast", "default": True}}}
    assert requests_for(v, want) == [("qdisc", "root", "2:", "mq")]


def test_ingress_police_is_replaced_on_its_own_node():
    police = {"rate": 12_500_000, "burst": 1 << 20, "mtu": tc.UNLIMITED}
    node = Filter(2, INGRESS_HANDLE, 1, "all", "u32", 0x80000800, {
        "keys": [[0, 0, 0, 0]], "flowid": 0, "mark": None, "police": police, "opaque": None})
    v = view(Qdisc(2, INGRESS_HANDLE, TC_H_INGRESS, "ingress", {}), filters=[node])
    have, policer = kind._ingress_state(v, ETH0)
    assert have == {"kind": "ingress", "police": police}
    faster = {"kind": "ingress", "police": dict(police, rate=25_000_000)}
    assert what(kind.ingress_requests(ETH0, have, policer, faster)) == [
        ("filter", "ffff:", "8000:800", "u32")]
    none, nothing = kind._ingress_state(view(), ETH0)
    assert what(kind.ingress_requests(ETH0, none, nothing, faster)) == [
        ("qdisc", "ffff:fff1", "ffff:", "ingress"), ("filter", "ffff:", "0:", "u32")]
    assert what(kind.ingress_requests(ETH0, have, policer, {"kind": "none"})) == [
        ("del qdisc", "ffff:fff1", "ffff:", "")]


def test_modules_a_tree_needs():
    assert kind.modules_of("root", HTB_WANT) == ["sch_htb", "cls_u32"]
    assert kind.modules_of("root", {"kind": "mq", "child": {"kind": "fq"}}) == ["sch_fq"]
    assert kind.modules_of("root", {"kind": "default", "default": True}) == []
    assert kind.modules_of("ingress", {"kind": "ingress", "police": {"rate": 1}}) == [
        "sch_ingress", "cls_u32", "act_police"]


# -- text ------------------------------------------------------------------------------------


def test_plans_read_like_tc():
    assert kind.describe("root", {"kind": "fq_codel", "default": True}) == "fq_codel(default)"
    assert kind.describe("root", {"kind": "fq", "options": {
        "flow_limit": 100, "buckets": 1024, "horizon": 10_000_000, "pacing": True,
        "maxrate": 1_250_000_000}}) == \
        "fq flow_limit 100 buckets 1024 horizon 10s pacing on maxrate 10gbit"
    assert kind.describe("root", HTB_WANT) == (
        "htb rate 50mbit default bulk [voice rate 10mbit ceil 50mbit prio 0] [bulk rate 40mbit "
        "ceil 50mbit prio 0] filters: dscp ef -> voice")
    assert kind.describe("root", {"kind": "mq", "child": {"kind": "fq", "options": {}}}) == \
        "mq child fq"
    assert kind.describe("ingress", {"kind": "none"}) == "none"
    assert kind.describe("ingress", {"kind": "ingress", "police": {
        "rate": 12_500_000, "burst": 1 << 20, "mtu": tc.UNLIMITED}}) == \
        "ingress police rate 100mbit burst 1mb drop"
