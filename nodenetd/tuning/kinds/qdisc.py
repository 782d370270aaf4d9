"""tc QoS as a setting kind: ``qdisc.root`` (the root qdisc and its tree) and
``qdisc.ingress`` (an ingress policer), per interface.

The value is the whole tree as plain JSON, so the journal stores it as it is and ``apply``
takes it back (``nodenetd.config.qos`` documents the desired form). Read from the kernel:

- the kernel's own default root (handle 0: noqueue on veth, pfifo_fast or fq_codel on a
  single-queue NIC, mq with default children on a multi-queue NIC; nothing at all on a device
  that was never up) reads ``{"kind": "noqueue", "default": true}``; putting it back deletes
  whatever root is there and the kernel attaches its default again;
- fq, fq_codel, cake, tbf, pfifo, bfifo, pfifo_fast and noqueue read with every option the
  kernel reports; mq with the qdisc of each TX queue (``children``, by queue number); htb
  with its classes and u32 filters;
- anything else (netem, prio, an htb with leaf qdiscs or hash-table filters, a clsact with
  eBPF programs...) cannot be put back faithfully, so the setting is skipped with that reason
  and nodenetd never touches it.

``in_sync`` is a structural compare: same kind, and every option the desired value sets has
the kernel's value (options a profile leaves out are the kernel's business: a new qdisc gets
its defaults, a changed one keeps what it had). Values the kernel quantises compare the way
the kernel stores them (burst ticks, codel time), so a correct qdisc reads as in sync and a
no-op plan changes nothing.

``apply`` diffs against the kernel's state read at that moment (after channels and link
settings changed), and writes only what differs, pipelined for every interface at once:

- same kind, and the kernel can change it in place (fq, fq_codel except ``flows``, cake,
  tbf): RTM_NEWQDISC with the qdisc's own handle and replace semantics: a change, no
  teardown, statistics kept;
- another kind (or htb's default class or r2q, which the kernel cannot change): a new
  qdisc with an unused handle, grafted in place of the old one in one atomic step;
- htb classes: created or changed in place (RTM_NEWTCLASS), stale ones deleted; filters
  diffed per u32 priority (a changed group is deleted and added again in the same batch);
- mq: the child qdisc of every TX queue (all of the device's queues, not only the active
  ones, so raising the channel count later exposes no default qdisc), each changed or
  grafted like a root;
- ingress: the ingress qdisc and a match-all u32 filter with a police action; a changed
  policer is replaced in place on the same filter node.

If any write for an interface fails, that interface's tree is put back as it was before
the apply, so a kernel without a qdisc kind (Unsupported) leaves nothing half-built.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nodenetd.errors import Gone, KernelError, Unsupported
from nodenetd.kernel import tc
from nodenetd.kernel.tc import (
    INGRESS_HANDLE,
    TC_H_INGRESS,
    TC_H_ROOT,
    Filter,
    Qdisc,
    Request,
    TcClass,
    burst_ticks,
    same_codel_time,
)
from nodenetd.tuning.kind import Batch, SettingKind
from nodenetd.tuning.plan import Target
from nodenetd.tuning.session import KernelSession

log = logging.getLogger("nodenetd.qdisc")

_SIMPLE = ("fq", "fq_codel", "cake", "tbf", "pfifo", "bfifo", "noqueue", "pfifo_fast")
_MQ_CHILDREN = ("fq", "fq_codel", "cake", "tbf", "pfifo", "bfifo", "pfifo_fast")
_CODEL_TIMES = ("target", "interval", "ce_threshold")
_NOT_IN_VALUE = ("level",)
_POLICE_PRIO = 1

Value = dict[str, Any]


# --------------------------------------------------------------------------------------------
# The kernel's view, read once per run


@dataclass
class DeviceTc:
    """One interface's qdiscs (classes and filters are read only when a tree has them)."""

    ifindex: int
    qdiscs: list[Qdisc] = field(default_factory=list)

    @property
    def root(self) -> Qdisc | None:
        return next((q for q in self.qdiscs if q.parent == TC_H_ROOT), None)

    @property
    def ingress(self) -> Qdisc | None:
        return next((q for q in self.qdiscs if q.parent == TC_H_INGRESS), None)

    def below(self, handle: int) -> list[Qdisc]:
        """Qdiscs attached to classes of the qdisc ``handle``."""
        major = handle & 0xFFFF0000
        return [q for q in self.qdiscs if q.parent != TC_H_ROOT and q.parent != TC_H_INGRESS
                and q.parent & 0xFFFF0000 == major and q.handle != handle]

    def majors(self) -> set[int]:
        return {q.handle >> 16 for q in self.qdiscs if q.handle}


class TcView:
    """The tc state of a run: one qdisc dump, and classes, filters and TX queue counts
    fetched per device when asked for (the kernel dumps classes and filters per device)."""

    def __init__(self, api: tc.Tc, devices: Mapping[int, DeviceTc]) -> None:
        self.api = api
        self.devices = devices
        self._classes: dict[int, list[TcClass]] = {}
        self._filters: dict[tuple[int, int], list[Filter]] = {}
        self._txq: dict[int, int] | None = None

    def device(self, ifindex: int) -> DeviceTc:
        return self.devices.get(ifindex) or DeviceTc(ifindex)

    def classes(self, ifindex: int) -> list[TcClass]:
        if ifindex not in self._classes:
            self._classes[ifindex] = self.api.dump_classes(ifindex)
        return self._classes[ifindex]

    def filters(self, ifindex: int, parent: int) -> list[Filter]:
        if (ifindex, parent) not in self._filters:
            self._filters[(ifindex, parent)] = self.api.dump_filters(ifindex, parent)
        return self._filters[(ifindex, parent)]

    def tx_queues(self, ifindex: int) -> int:
        if self._txq is None:
            self._txq = self.api.tx_queues()
        return self._txq.get(ifindex, 1)


def read_view(session: KernelSession) -> TcView:
    """One dump of every qdisc of every interface. Also for a run about a few interfaces:
    the kernel filters no qdisc dump by interface, and a per-device RTM_GETQDISC is answered
    as a notification to every tc listener (``tc monitor`` would see reads as changes)."""
    devices: dict[int, DeviceTc] = {}
    for qdisc in session.tc.dump_qdiscs():
        devices.setdefault(qdisc.ifindex, DeviceTc(qdisc.ifindex)).qdiscs.append(qdisc)
    return TcView(session.tc, devices)


def _view(session: KernelSession) -> TcView:
    return session.cached("qdisc", lambda: read_view(session))


# --------------------------------------------------------------------------------------------
# Kernel -> value


class Foreign(Unsupported):
    """A tree nodenetd cannot put back as it is: it is left alone."""


def _foreign(target: Target, setting: str, what: str, hint: str) -> Foreign:
    return Foreign(str(target), f"qdisc.{setting}",
                   f"{what}, which nodenetd cannot put back as it is; {hint}")


def _spec_of(qdisc: Qdisc) -> Value | None:
    """A leaf qdisc (root of a simple kind, or an mq child) as a value, or None."""
    if qdisc.is_default:
        return {"kind": qdisc.kind, "default": True}
    if qdisc.kind not in _SIMPLE or qdisc.options is None or "peakrate" in qdisc.options:
        return None
    return {"kind": qdisc.kind, "options": dict(qdisc.options)}


def root_value(view: TcView, target: Target) -> Value:
    device = view.device(target.ifindex or 0)
    root = device.root
    if root is None or root.is_default:
        return {"kind": root.kind if root else "noop", "default": True}  # noop: never up
    where = f"the root qdisc is {root.kind} {tc.handle_text(root.handle)}"
    hint = (f"remove it ('tc qdisc del dev {target.device} root') to let nodenetd manage this "
            "interface's qdisc")
    below = [q for q in device.below(root.handle) if not q.is_default]
    if root.kind in _SIMPLE:
        spec = _spec_of(root)
        if spec is None or below:
            raise _foreign(target, "root", where + " with settings or children nodenetd does "
                           "not model", hint)
        return spec
    if root.kind == "mq":
        children: dict[str, Value] = {}
        for child in device.below(root.handle):
            spec = _spec_of(child) if child.kind in _MQ_CHILDREN or child.is_default else None
            if spec is None or (device.below(child.handle) and not child.is_default):
                raise _foreign(target, "root", f"{where} with a {child.kind} child on queue "
                               f"{child.parent & 0xFFFF}", hint)
            children[str(child.parent & 0xFFFF)] = spec
        return {"kind": "mq", "children": dict(sorted(children.items(), key=lambda c:
                                                      int(c[0])))}
    if root.kind == "htb" and root.options is not None and "offload" not in root.options:
        return _htb_value(view, target, root, below, where, hint)
    raise _foreign(target, "root", where, hint)


def _htb_value(view: TcView, target: Target, root: Qdisc, below: list[Qdisc], where: str,
               hint: str) -> Value:
    if below:
        raise _foreign(target, "root", f"{where} with leaf qdiscs", hint)
    major = root.handle & 0xFFFF0000
    classes = []
    for cls in view.classes(target.ifindex or 0):
        if cls.kind != "htb" or cls.options is None or cls.classid & 0xFFFF0000 != major:
            raise _foreign(target, "root", f"{where} with a class nodenetd does not model", hint)
        if cls.leaf:
            raise _foreign(target, "root", f"{where} with a leaf qdisc under class "
                           f"{tc.handle_text(cls.classid)}", hint)
        parent = 0 if cls.parent == TC_H_ROOT else cls.parent & 0xFFFF
        entry = {"minor": cls.classid & 0xFFFF, "parent": parent}
        entry.update({k: v for k, v in cls.options.items() if k not in _NOT_IN_VALUE})
        classes.append(entry)
    filters = []
    for node in view.filters(target.ifindex or 0, root.handle):
        options = node.options
        if (node.kind != "u32" or options is None or options.get("opaque")
                or "hash_table" in options or options.get("police")
                or node.protocol not in tc.ETH_P
                or (options["flowid"] and options["flowid"] & 0xFFFF0000 != major)):
            why = (options or {}).get("opaque") or f"a {node.kind} filter nodenetd does not model"
            raise _foreign(target, "root", f"{where} with {why}", hint)
        entry = {"prio": node.prio, "protocol": node.protocol, "keys": options["keys"],
                 "flowid": options["flowid"] & 0xFFFF}
        if options.get("mark"):
            entry["mark"] = options["mark"]
        filters.append(entry)
    return {"kind": "htb", "options": dict(root.options),
            "classes": sorted(classes, key=lambda c: c["minor"]), "filters": filters}


@dataclass(frozen=True)
class _Policer:
    node: Filter | None  # the u32 node carrying the police action, if any


def _ingress_state(view: TcView, target: Target) -> tuple[Value, _Policer]:
    device = view.device(target.ifindex or 0)
    ingress = device.ingress
    if ingress is None:
        return {"kind": "none"}, _Policer(None)
    if ingress.kind != "ingress":
        raise Foreign(str(target), "qdisc.ingress",
                      f"the interface has a {ingress.kind} qdisc (eBPF programs, e.g. a CNI's) "
                      "in the ingress slot; nodenetd leaves it alone")
    nodes = view.filters(target.ifindex or 0, INGRESS_HANDLE)
    if not nodes:
        return {"kind": "ingress"}, _Policer(None)
    node = nodes[0]
    options = node.options or {}
    if (len(nodes) != 1 or node.kind != "u32" or node.protocol != "all" or options.get("opaque")
            or not options.get("police") or options.get("mark") or options.get("flowid")
            or [k for k in options.get("keys", ()) if k != [0, 0, 0, 0]]):
        raise Foreign(str(target), "qdisc.ingress",
                      "the ingress qdisc has filters nodenetd did not make; nodenetd leaves "
                      f"them alone (see 'tc filter show dev {target.device} ingress')")
    return {"kind": "ingress", "police": dict(options["police"])}, _Policer(node)


# --------------------------------------------------------------------------------------------
# Comparing


def _close_ticks(rate: int, a: Any, b: Any) -> bool:
    if not isinstance(a, int) or not isinstance(b, int):
        return a == b
    return abs(burst_ticks(rate, a) - burst_ticks(rate, b)) <= 1


def _same_options(kind: str, have: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    for name, wanted in want.items():
        if name not in have:
            return False
        value = have[name]
        if kind == "tbf" and name == "burst":
            if not _close_ticks(int(want.get("rate", have.get("rate", 1))), value, wanted):
                return False
        elif kind == "fq_codel" and name in _CODEL_TIMES:
            if not same_codel_time(int(value), int(wanted)):
                return False
        elif value != wanted:
            return False
    return True


def _same_spec(have: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    if want.get("default"):
        return bool(have.get("default"))
    if have.get("default") or have.get("kind") != want.get("kind"):
        return False
    return _same_options(want["kind"], have.get("options") or {}, want.get("options") or {})


def _same_class(have: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    for name in ("parent", "rate", "ceil", "prio"):
        if have.get(name) != want.get(name):
            return False
    if want.get("quantum") and have.get("quantum") != want["quantum"]:
        return False
    return (_close_ticks(int(want["rate"]), have.get("burst"), want.get("burst"))
            and _close_ticks(int(want["ceil"]), have.get("cburst"), want.get("cburst")))


_GROUPS: dict[int, tuple[Any, dict]] = {}  # id(filter list) -> (the list, its groups)


def _filter_groups(filters: Sequence[Mapping[str, Any]]) -> dict[tuple[int, str], list[tuple]]:
    """Filters by (prio, protocol), each as comparable (keys, flowid, mark), in order. A
    profile's list is shared by every interface its rule matches: compiled once."""
    cached = _GROUPS.get(id(filters))
    if cached is not None and cached[0] is filters:
        return cached[1]
    groups = _compile_groups(filters)
    if any("match" in item for item in filters):  # a desired list (kernel reads are not kept)
        if len(_GROUPS) > 1024:
            _GROUPS.clear()
        _GROUPS[id(filters)] = (filters, groups)
    return groups


def _compile_groups(filters: Sequence[Mapping[str, Any]]) -> dict[tuple[int, str], list[tuple]]:
    groups: dict[tuple[int, str], list[tuple]] = {}
    for item in filters:
        keys = item.get("keys")
        if keys is None:
            keys = tc.u32_keys(item.get("match") or {}, item["protocol"])
        mark = tuple(item["mark"]) if item.get("mark") else None
        groups.setdefault((int(item["prio"]), item["protocol"]), []).append(
            (tuple(tuple(k) for k in keys), int(item.get("flowid") or 0), mark))
    return groups


def _same_htb(have: Value, want: Value) -> bool:
    if not _same_options("htb", have.get("options") or {}, want.get("options") or {}):
        return False
    have_classes = {c["minor"]: c for c in have.get("classes", ())}
    want_classes = {c["minor"]: c for c in want.get("classes", ())}
    if set(have_classes) != set(want_classes):
        return False
    if not all(_same_class(have_classes[m], c) for m, c in want_classes.items()):
        return False
    return _filter_groups(have.get("filters", ())) == _filter_groups(want.get("filters", ()))


def _same_mq(have: Value, want: Value) -> bool:
    children = have.get("children") or {}
    if "child" in want:
        return bool(children) and all(_same_spec(c, want["child"]) for c in children.values())
    wanted = want.get("children") or {}
    return all(q in children and _same_spec(children[q], c) for q, c in wanted.items())


def same_root(have: Value, want: Value) -> bool:
    if want.get("default") or have.get("default"):
        return bool(want.get("default")) == bool(have.get("default"))
    if have.get("kind") != want.get("kind"):
        return False
    if want["kind"] == "mq":
        return _same_mq(have, want)
    if want["kind"] == "htb":
        return _same_htb(have, want)
    return _same_spec(have, want)


def same_ingress(have: Value, want: Value) -> bool:
    if have.get("kind") != want.get("kind"):
        return False
    hp, wp = have.get("police"), want.get("police")
    if not hp or not wp:
        return not hp and not wp
    return (hp.get("rate") == wp.get("rate") and hp.get("mtu") == wp.get("mtu")
            and _close_ticks(int(wp["rate"]), hp.get("burst"), wp.get("burst")))


# --------------------------------------------------------------------------------------------
# Value -> requests


def _free_major(device: DeviceTc) -> int:
    used = device.majors()
    return next(m for m in range(1, 0xFFFF) if m not in used)


def _needs_new(kind: str, have: Value, want: Value) -> bool:
    """Whether the same kind still needs a new qdisc: no in-place change in this kernel."""
    if kind not in tc.CHANGEABLE:
        return True
    if kind == "fq_codel":  # the kernel takes flows only when it creates the qdisc
        wanted = (want.get("options") or {}).get("flows")
        return wanted is not None and wanted != (have.get("options") or {}).get("flows")
    return False


def _change_options(kind: str, have: Value, want: Value) -> dict[str, Any]:
    options = dict(want.get("options") or {})
    if kind == "fq_codel":
        options.pop("flows", None)  # equal (else a new qdisc), and refused on change
    return options


def _leaf_requests(ifindex: int, parent: int, existing: Qdisc | None, have: Value | None,
                   want: Value, fresh_handle: int) -> list[Request]:
    """Requests that turn the qdisc at ``parent`` (``existing``, read as ``have``) into
    ``want``: nothing, a change in place, or a new qdisc grafted (handle ``fresh_handle``;
    0: the kernel picks one)."""
    if have is not None and _same_spec(have, want):
        return []
    kind = want["kind"]
    if (existing is not None and not existing.is_default and existing.kind == kind
            and have is not None and not _needs_new(kind, have, want)):
        return [tc.new_qdisc(ifindex, parent, existing.handle, kind,
                             _change_options(kind, have, want))]
    return [tc.new_qdisc(ifindex, parent, fresh_handle, kind, want.get("options") or {})]


def root_requests(view: TcView, target: Target, have: Value, want: Value) -> list[Request]:
    if same_root(have, want):
        return []
    ifindex = target.ifindex or 0
    device = view.device(ifindex)
    root = device.root
    if want.get("default"):
        return [tc.del_qdisc(ifindex, TC_H_ROOT)]
    fresh = _free_major(device) << 16
    kind = want["kind"]
    if kind in _SIMPLE:
        return _leaf_requests(ifindex, TC_H_ROOT, root, have, want, fresh)
    if kind == "mq":
        return _mq_requests(view, target, root, have, want, fresh)
    return _htb_requests(ifindex, root, have, want, fresh)


def _mq_requests(view: TcView, target: Target, root: Qdisc | None, have: Value, want: Value,
                 fresh: int) -> list[Request]:
    ifindex = target.ifindex or 0
    device = view.device(ifindex)
    queues = view.tx_queues(ifindex)
    specs = ({str(q): want["child"] for q in range(1, queues + 1)} if "child" in want
             else dict(want.get("children") or {}))
    keep = (root is not None and not root.is_default and root.kind == "mq"
            and not any(s.get("default") and not (have.get("children") or {}).get(q, {})
                        .get("default") for q, s in specs.items()))
    # A default child can only come back with a new mq (deleting a child leaves noop).
    requests: list[Request] = []
    if keep and root is not None:
        handle = root.handle
        existing = {str(q.parent & 0xFFFF): q for q in device.below(root.handle)}
        children = have.get("children") or {}
    else:
        handle = fresh
        requests.append(tc.new_qdisc(ifindex, TC_H_ROOT, handle, "mq"))
        existing, children = {}, {}
    for queue, spec in specs.items():
        if spec.get("default"):
            continue  # a new mq made it
        parent = handle | int(queue)
        requests += _leaf_requests(ifindex, parent, existing.get(queue), children.get(queue),
                                   spec, 0)
    return requests


def _htb_requests(ifindex: int, root: Qdisc | None, have: Value, want: Value,
                  fresh: int) -> list[Request]:
    keep = (root is not None and not root.is_default and have.get("kind") == "htb"
            and _same_options("htb", have.get("options") or {}, want.get("options") or {}))
    requests: list[Request] = []
    if keep and root is not None:
        major = root.handle
        have_classes = {c["minor"]: c for c in have.get("classes", ())}
        have_filters = _filter_groups(have.get("filters", ()))
    else:
        major = fresh
        requests.append(tc.new_qdisc(ifindex, TC_H_ROOT, major, "htb", want.get("options")))
        have_classes, have_filters = {}, {}
    want_classes = {c["minor"]: c for c in want.get("classes", ())}
    want_filters = _filter_groups(want.get("filters", ()))
    stale_groups = [g for g, nodes in have_filters.items() if want_filters.get(g) != nodes]
    for prio, protocol in stale_groups:
        requests.append(tc.del_filter(ifindex, major, prio, protocol))
    stale = [c for m, c in have_classes.items()
             if m not in want_classes or want_classes[m]["parent"] != c["parent"]]
    for cls in sorted(stale, key=lambda c: c["parent"] == 0):  # leaves before the root class
        requests.append(tc.del_class(ifindex, major | cls["minor"]))
    gone = {c["minor"] for c in stale}
    for minor, cls in sorted(want_classes.items(), key=lambda c: (c[1]["parent"] != 0, c[0])):
        current = have_classes.get(minor)
        if current is not None and minor not in gone and _same_class(current, cls):
            continue
        parent = TC_H_ROOT if cls["parent"] == 0 else major | cls["parent"]
        requests.append(tc.new_class(ifindex, parent, major | minor, cls))
    for (prio, protocol), nodes in want_filters.items():
        if have_filters.get((prio, protocol)) == nodes and (prio, protocol) not in stale_groups:
            continue
        for keys, flowid, mark in nodes:
            options = {"keys": [list(k) for k in keys], "flowid": major | flowid if flowid
                       else 0, "mark": list(mark) if mark else None}
            requests.append(tc.new_filter(ifindex, major, prio, protocol, options))
    return requests


def ingress_requests(target: Target, have: Value, policer: _Policer, want: Value
                     ) -> list[Request]:
    if same_ingress(have, want):
        return []
    ifindex = target.ifindex or 0
    if want["kind"] == "none":
        return [tc.del_qdisc(ifindex, TC_H_INGRESS, INGRESS_HANDLE)]
    requests: list[Request] = []
    if have["kind"] == "none":
        requests.append(tc.new_qdisc(ifindex, TC_H_INGRESS, INGRESS_HANDLE, "ingress"))
    node = policer.node
    if not want.get("police"):
        if node is not None:
            requests.append(tc.del_filter(ifindex, INGRESS_HANDLE, node.prio, node.protocol))
        return requests
    options = {"keys": [], "police": want["police"]}
    if node is not None:  # replace the action on the same node: never unpoliced
        requests.append(tc.new_filter(ifindex, INGRESS_HANDLE, node.prio, "all", options,
                                      handle=node.handle))
    else:
        requests.append(tc.new_filter(ifindex, INGRESS_HANDLE, _POLICE_PRIO, "all", options))
    return requests


# --------------------------------------------------------------------------------------------
# Text


def _opts_text(kind: str, options: Mapping[str, Any]) -> str:
    words = []
    for name, value in options.items():
        sizes = ("burst", "limit") if kind in ("tbf", "bfifo") else ()
        if (name, value) in (("maxrate", tc.UNLIMITED), ("bandwidth", 0)):
            text = "unlimited"
        elif name in ("rate", "maxrate", "low_rate_threshold", "bandwidth"):
            text = tc.describe_rate(int(value))
        elif name in (*sizes, "quantum", "initial_quantum", "memory_limit", "memlimit"):
            text = tc.describe_size(int(value))
        elif name in ("horizon", "target", "interval", "ce_threshold", "rtt", "refill_delay"):
            text = "off" if value == tc.UNLIMITED else tc.describe_time(int(value))
        elif name == "timer_slack":
            text = tc.describe_time(int(value) // 1000) if value % 1000 == 0 else f"{value}ns"
        elif isinstance(value, bool):
            text = "on" if value else "off"
        else:
            text = str(value)
        words.append(f"{name} {text}")
    return " ".join(words)


def _spec_text(spec: Mapping[str, Any]) -> str:
    if spec.get("kind") == "default":
        return "default"
    if spec.get("default"):
        return f"{spec['kind']}(default)"
    options = _opts_text(spec["kind"], spec.get("options") or {})
    return f"{spec['kind']} {options}".strip()


_DSCP_WORDS = {0: "be", 1: "le", 44: "va", 46: "ef", **{i * 8: f"cs{i}" for i in range(1, 8)},
               **{c * 8 + d * 2: f"af{c}{d}" for c in range(1, 5) for d in range(1, 4)}}
_PROTO_WORDS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}


def _filters_text(filters: Sequence[Mapping[str, Any]], names: Mapping[int, str]) -> str:
    """'udp dport 5060 -> voice, dscp ef,cs5 -> voice, dscp af11,be -> bulk' (a family is
    named only when a match exists for one of IPv4 and IPv6)."""
    seen: dict[tuple[str, str], set[str]] = {}
    dscps: dict[str, list[str]] = {}
    for item in filters:
        match = item.get("match")
        if match is None:
            match = tc.u32_match(item.get("keys") or [], item["protocol"])
        target = names.get(int(item.get("flowid") or 0), f":{int(item.get('flowid') or 0):x}")
        if match is not None and set(match) == {"dscp"} and not item.get("mark"):
            word = _DSCP_WORDS.get(match["dscp"], str(match["dscp"]))
            if word not in dscps.setdefault(target, []):
                dscps[target].append(word)
            continue
        words = []
        if match is None:
            words.append(f"u32 {item.get('keys')}")
        else:
            if "ipproto" in match:
                words.append(_PROTO_WORDS.get(match["ipproto"], f"proto {match['ipproto']}"))
            words += [f"{k} {match[k]}" for k in ("sport", "dport") if k in match]
            if "dscp" in match:
                words.append(f"dscp {_DSCP_WORDS.get(match['dscp'], match['dscp'])}")
        if item.get("mark"):
            val, mask = item["mark"]
            words.append(f"mark 0x{val:x}" + ("" if mask == 0xFFFFFFFF else f"/0x{mask:x}"))
        seen.setdefault((" ".join(words), target), set()).add(item["protocol"])
    texts = []
    for (words, target), families in seen.items():
        family = ""
        if families in ({"ip"}, {"ipv6"}):
            family = " ipv4" if families == {"ip"} else " ipv6"
        texts.append(f"{words}{family} -> {target}")
    texts += [f"dscp {','.join(words)} -> {target}" for target, words in dscps.items()]
    return ", ".join(texts)


def describe(key: str, value: Any) -> str:
    """A qdisc value as a person reads it in a plan: 'fq_codel(default)',
    'fq flow_limit 100 buckets 1024', 'htb rate 1gbit default bulk [voice 200mbit...]'."""
    if not isinstance(value, Mapping):
        return str(value)
    if key == "ingress":
        if value.get("kind") == "none":
            return "none"
        police = value.get("police")
        if not police:
            return "ingress"
        mtu = "" if police.get("mtu") == tc.UNLIMITED else \
            f" mtu {tc.describe_size(police['mtu'])}"
        return (f"ingress police rate {tc.describe_rate(police['rate'])} burst "
                f"{tc.describe_size(police['burst'])}{mtu} drop")
    kind = value.get("kind")
    if value.get("default") or kind in _SIMPLE:
        return _spec_text(value)
    if kind == "mq":
        if "child" in value:
            return f"mq child {_spec_text(value['child'])}"
        texts = [_spec_text(c) for c in (value.get("children") or {}).values()]
        if texts and all(t == texts[0] for t in texts):
            return f"mq {len(texts)}x {texts[0]}"
        return "mq " + "; ".join(f"{q}: {t}" for q, t in zip(value.get("children") or {}, texts,
                                                                strict=True))
    if kind == "htb":
        options = value.get("options") or {}
        classes = value.get("classes") or []
        names = {c["minor"]: c.get("name") or f":{c['minor']:x}" for c in classes}
        top = next((c for c in classes if c.get("parent") == 0), None)
        rate = f" rate {tc.describe_rate(top['rate'])}" if top else ""
        default = names.get(options.get("default", 0), f":{options.get('default', 0):x}")
        parts = [f"htb{rate} default {default}"]
        for cls in classes:
            if cls.get("parent") == 0:
                continue
            parts.append(f"[{names[cls['minor']]} rate {tc.describe_rate(cls['rate'])} ceil "
                         f"{tc.describe_rate(cls['ceil'])} prio {cls.get('prio', 0)}]")
        filters = value.get("filters") or []
        if filters:
            parts.append("filters: " + _filters_text(filters, names))
        return " ".join(parts)
    return str(value)


def modules_of(key: str, value: Mapping[str, Any]) -> list[str]:
    """The kernel modules a tree needs: sch_KIND for each qdisc, cls_u32 for filters,
    sch_ingress and act_police for a policer. Built-ins (mq, pfifo_fast...) need none."""
    if key == "ingress":
        return ["sch_ingress", "cls_u32", "act_police"] if value.get("police") else \
            (["sch_ingress"] if value.get("kind") == "ingress" else [])
    if value.get("default"):
        return []
    kinds = [value.get("kind", "")]
    if "child" in value:
        kinds.append(value["child"].get("kind", ""))
    kinds += [c.get("kind", "") for c in (value.get("children") or {}).values()
              if not c.get("default")]
    modules = [f"sch_{k}" for k in dict.fromkeys(kinds) if k in _MODULAR]
    if value.get("filters"):
        modules.append("cls_u32")
    return modules


_MODULAR = ("fq", "fq_codel", "cake", "tbf", "htb")


# --------------------------------------------------------------------------------------------
# The kind


class QdiscKind(SettingKind):
    """Keys: ``root`` (the root qdisc tree) and ``ingress`` (an ingress policer)."""

    name = "qdisc"
    # The root tree and the ingress policer are separate kernel objects: each is its own
    # write with its own result (a kernel without act_police still gets its htb).
    multi_key = False
    # An mq has one child per TX queue: after a channel change the transaction re-plans the
    # tree (the new queues' children), and restores it once the channels are back.
    follows = ("channels",)

    def current(self, session: KernelSession, target: Target, key: str) -> Value:
        if target.ifindex is None:
            raise Gone(str(target), f"qdisc.{key}", "interface no longer exists")
        view = _view(session)
        if key == "root":
            return root_value(view, target)
        return _ingress_state(view, target)[0]

    def resolve(self, session: KernelSession, target: Target, key: str, wanted: Any,
                current: Any) -> Any:
        """The desired tree; Unsupported when it needs a qdisc, classifier or action this
        kernel does not have (and the kernel is not already there)."""
        value = wanted.value
        missing = [m for m in modules_of(key, value) if tc.kernel_lacks(m)]
        if missing and not self.in_sync(current, value):
            module = missing[0]
            what = {"sch": "qdisc", "cls": "classifier", "act": "action"}[module[:3]]
            raise Unsupported(str(target), f"qdisc.{key}",
                              f"this kernel has no {module[4:]} {what} ({module})")
        return value

    def in_sync(self, current: Any, desired: Any) -> bool:
        if not isinstance(current, Mapping) or not isinstance(desired, Mapping):
            return current == desired
        if desired.get("kind") in ("ingress", "none") and not desired.get("default"):
            return same_ingress(current, desired)
        return same_root(current, desired)

    def apply(self, session: KernelSession, batch: Batch) -> list[KernelError | None]:
        results: list[KernelError | None] = [None] * len(batch)
        session.invalidate(self.name)  # diff against the kernel as it is now
        view = read_view(session)
        before: dict[int, dict[str, Value]] = {}
        requests: list[Request] = []
        owner: list[int] = []
        names = {t.ifindex or 0: str(t) for t, _ in batch}
        for position, (target, values) in enumerate(batch):
            try:
                plan, was = self._requests(view, target, values)
            except KernelError as exc:
                results[position] = exc
                continue
            before[position] = was
            requests += plan
            owner += [position] * len(plan)
        outcomes = session.tc.run(requests, names) if requests else []
        failed: dict[int, KernelError] = {}
        for position, error in zip(owner, outcomes, strict=True):
            if error is not None and position not in failed:
                failed[position] = error
        failed.update(self._check_marks(session, batch, failed))
        if failed:
            self._undo(session, batch, failed, before)
        for position, error in failed.items():
            results[position] = error
        session.invalidate(self.name)
        return results

    @staticmethod
    def _requests(view: TcView, target: Target, values: Mapping[str, Any]
                  ) -> tuple[list[Request], dict[str, Value]]:
        requests: list[Request] = []
        was: dict[str, Value] = {}
        if "root" in values:
            have = root_value(view, target)
            was["root"] = have
            requests += root_requests(view, target, have, values["root"])
        if "ingress" in values:
            have, policer = _ingress_state(view, target)
            was["ingress"] = have
            requests += ingress_requests(target, have, policer, values["ingress"])
        return requests, was

    @staticmethod
    def _check_marks(session: KernelSession, batch: Batch, failed: Mapping[int, KernelError]
                     ) -> dict[int, KernelError]:
        """u32 takes TCA_U32_MARK silently when built without CONFIG_CLS_U32_MARK: read the
        filters back where a mark was asked for, and call that what it is."""
        problems: dict[int, KernelError] = {}
        view: TcView | None = None
        for position, (target, values) in enumerate(batch):
            root = values.get("root") or {}
            if position in failed or not any(f.get("mark") for f in root.get("filters", ())):
                continue
            view = view or read_view(session)
            device = view.device(target.ifindex or 0)
            if device.root is None:
                continue
            nodes = session.tc.dump_filters(target.ifindex or 0, device.root.handle)
            if not any((n.options or {}).get("mark") for n in nodes):
                problems[position] = Unsupported(
                    str(target), "qdisc.root", "this kernel's u32 classifier cannot match "
                    "firewall marks (built without CONFIG_CLS_U32_MARK)")
        return problems

    def _undo(self, session: KernelSession, batch: Batch, failed: Mapping[int, KernelError],
              before: Mapping[int, Mapping[str, Value]]) -> None:
        """Put the interfaces whose writes failed back the way they were."""
        items = [(batch[p][0], before[p]) for p in failed if p in before]
        if not items:
            return
        view = read_view(session)
        requests: list[Request] = []
        for target, was in items:
            try:
                requests += self._requests(view, target, was)[0]
            except KernelError as exc:
                log.error("%s: cannot put the qdisc back after a failed write: %s", target,
                          exc.reason)
        errors = [e for e in session.tc.run(requests) if e is not None] if requests else []
        for error in errors:
            log.error("putting a qdisc back failed: %s", error)
