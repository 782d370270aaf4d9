"""Traffic control over rtnetlink: qdiscs, classes and filters, read and written without ``tc``.

The socket is the shared netlink core (``nodenetd.kernel.netlink``); attribute layouts are
explicit ``nla_map`` tables written down here from ``include/uapi/linux/pkt_sched.h``,
``pkt_cls.h`` and ``tc_act/tc_police.h`` (pyroute2's ``tcmsg`` plugins were the cross-check;
pyroute2 itself is not imported: it has no fq, and its import costs seconds under the kernel
lab's emulation).

Reads:

- ``dump_qdiscs()``: every qdisc of every interface in one dump (RTM_GETQDISC);
- (no per-device "get": the kernel answers RTM_GETQDISC as a notification to every tc
  listener, so a read would look like a change to ``tc monitor`` and to the daemon);
- ``dump_classes(ifindex)`` / ``dump_filters(ifindex, parent)``: the kernel dumps these per
  interface only, so callers ask only for interfaces whose tree has classes or filters.

Writes are ``Request`` values (``new_qdisc``, ``del_qdisc``, ``new_class``, ``del_class``,
``new_filter``, ``del_filter``) run by ``run``, pipelined: many interfaces' changes travel in
a few datagrams, the kernel handles them in order, and each request gets its own result.
Every create-or-change is sent with ``NLM_F_CREATE | NLM_F_REPLACE``, which is ``tc ... replace``:
for a qdisc whose parent already holds one of the same kind and the same handle the kernel
*changes* it in place (no packet is lost, the qdisc and its statistics stay); with another
handle or kind it builds the new one and grafts it in atomically, destroying the old.

Options are decoded into plain dicts in the units a profile speaks: rates in bytes per
second, sizes in bytes, times in microseconds (fq's ``timer_slack`` in nanoseconds). Where
the kernel quantises a value, the conversions here are the kernel's own:

- htb and tbf bursts and police bursts travel as *ticks* (64 ns, ``PSCHED_SHIFT`` 6) of
  transmission time at the class's rate. ``burst_ticks`` computes what ``tc`` sends;
  decoding gives the smallest byte count with those ticks, so a value read from the kernel
  and written back is unchanged;
- codel times (fq_codel target, interval, ce_threshold) are kept as ns >> 10 and dumped
  rounded down to microseconds; ``codel_us`` recovers the microsecond value that maps to the
  same kernel value, for the same reason.

Errors: ``kernel_error`` (the shared errno mapping), except that ENOENT with the kernel's "kind
is unknown"/"not found"/"Failed to load" message means a qdisc, classifier or action this
kernel does not have (not built, module not available): ``Unsupported``, naming the module.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodenetd.errors import KernelError, Unsupported
from nodenetd.kernel.netlink import (
    NLMSGHDR,
    NetlinkFailure,
    NetlinkSocket,
    decode_attrs,
    encode_attrs,
    iter_attrs,
    kernel_error,
    nla,
    socket_in_netns,
)

__all__ = [
    "ETH_P",
    "TC_H_INGRESS",
    "TC_H_ROOT",
    "UNLIMITED",
    "Filter",
    "Qdisc",
    "Request",
    "Tc",
    "TcClass",
    "burst_ticks",
    "codel_us",
    "del_class",
    "del_filter",
    "del_qdisc",
    "handle_text",
    "new_class",
    "new_filter",
    "new_qdisc",
    "ticks_bytes",
]

# linux/rtnetlink.h, linux/netlink.h, linux/pkt_sched.h
RTM_NEWQDISC, RTM_DELQDISC, RTM_GETQDISC = 36, 37, 38
RTM_NEWTCLASS, RTM_DELTCLASS, RTM_GETTCLASS = 40, 41, 42
RTM_NEWTFILTER, RTM_DELTFILTER, RTM_GETTFILTER = 44, 45, 46
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400
_WRITE_FLAGS = NLM_F_CREATE | NLM_F_REPLACE  # tc's "replace"; delete requests ignore them

TC_H_ROOT = 0xFFFFFFFF
TC_H_INGRESS = 0xFFFFFFF1  # also clsact's parent
INGRESS_HANDLE = 0xFFFF0000
UNLIMITED = 0xFFFFFFFF  # fq maxrate / ce_threshold "off", as the kernel spells it

ETH_P = {"all": 0x0003, "ip": 0x0800, "ipv6": 0x86DD}
_ETH_P_NAMES = {number: name for name, number in ETH_P.items()}

_IFINFOMSG = struct.Struct("=BxHiII")
_RTM_GETLINK = 18
_RTEXT_FILTER_SKIP_STATS = 1 << 3
_TCMSG = struct.Struct("=BBHiIII")  # family, pad, pad, ifindex, handle, parent, info
_PAYLOAD = NLMSGHDR.size + _TCMSG.size
_LINKLAYER_ETHERNET = 1
_TICKS_PER_SEC = 15_625_000  # 1e9 ns / 64 ns (PSCHED_SHIFT 6)
_U32_MAX = 0xFFFFFFFF

# --------------------------------------------------------------------------------------------
# Quantised values


def burst_ticks(rate: int, size: int) -> int:
    """Transmission time of ``size`` bytes at ``rate`` bytes/s in psched ticks, as ``tc``
    computes htb/tbf/police bursts (tc_calc_xmittime)."""
    if rate <= 0:
        return 0
    return min(size * _TICKS_PER_SEC // rate, _U32_MAX)


def ticks_bytes(rate: int, ticks: int) -> int:
    """The smallest byte count whose ``burst_ticks`` at ``rate`` are ``ticks``."""
    if rate <= 0:
        return 0
    return -(-ticks * rate // _TICKS_PER_SEC)


def _codel_time(us: int) -> int:
    return us * 1000 >> 10  # codel_time_t: ns >> CODEL_SHIFT


def codel_us(dumped_us: int) -> int:
    """Microseconds that map to the codel time behind a dumped value (the dump rounds down:
    5 ms is stored as 4882 and dumped as 4999 us; this gives 5000 back)."""
    if dumped_us >= _U32_MAX:
        return dumped_us
    ct = -(-dumped_us * 1000 // 1024)
    return -(-ct * 1024 // 1000)


def same_codel_time(a: int, b: int) -> bool:
    return _codel_time(a) == _codel_time(b)


def handle_text(handle: int) -> str:
    """A handle as tc prints it: 1:, 1:10, ffff:, root."""
    if handle == TC_H_ROOT:
        return "root"
    major, minor = handle >> 16, handle & 0xFFFF
    return f"{major:x}:{minor:x}" if minor else f"{major:x}:"


# --------------------------------------------------------------------------------------------
# Attribute tables


class _tca:
    nla_map = (
        (1, "TCA_KIND", "asciiz"),
        (2, "TCA_OPTIONS", "cdata"),  # decoded by kind
        (10, "TCA_DUMP_INVISIBLE", "flag"),
        (11, "TCA_CHAIN", "uint32"),
    )


class _ifla:
    nla_map = (
        (29, "IFLA_EXT_MASK", "uint32"),
        (31, "IFLA_NUM_TX_QUEUES", "uint32"),
    )


class _fq:
    nla_map = (
        (1, "limit", "uint32"),  # TCA_FQ_PLIMIT
        (2, "flow_limit", "uint32"),  # TCA_FQ_FLOW_PLIMIT
        (3, "quantum", "uint32"),
        (4, "initial_quantum", "uint32"),
        (5, "pacing", "uint32"),  # TCA_FQ_RATE_ENABLE
        (7, "maxrate", "uint32"),  # TCA_FQ_FLOW_MAX_RATE, bytes/s, ~0U: unlimited
        (8, "buckets", "uint32"),  # TCA_FQ_BUCKETS_LOG
        (9, "refill_delay", "uint32"),  # TCA_FQ_FLOW_REFILL_DELAY, us (kept in jiffies)
        (10, "orphan_mask", "uint32"),
        (11, "low_rate_threshold", "uint32"),
        (12, "ce_threshold", "uint32"),  # us, ~0U: off
        (13, "timer_slack", "uint32"),  # ns
        (14, "horizon", "uint32"),  # us
        (15, "horizon_drop", "uint8"),
    )


class _fq_codel:
    nla_map = (
        (1, "target", "uint32"),  # us
        (2, "limit", "uint32"),
        (3, "interval", "uint32"),  # us
        (4, "ecn", "uint32"),
        (5, "flows", "uint32"),
        (6, "quantum", "uint32"),
        (7, "ce_threshold", "uint32"),  # us; absent: off
        (8, "drop_batch_size", "uint32"),
        (9, "memory_limit", "uint32"),
    )


class _cake:
    nla_map = (
        (2, "bandwidth", "uint64"),  # TCA_CAKE_BASE_RATE64, bytes/s; 0: unlimited
        (3, "diffserv", "uint32"),
        (4, "atm", "uint32"),
        (5, "flow_mode", "uint32"),
        (6, "overhead", "int32"),
        (7, "rtt", "uint32"),  # us
        (8, "target", "uint32"),  # us
        (9, "autorate", "uint32"),
        (10, "memlimit", "uint32"),  # TCA_CAKE_MEMORY
        (11, "nat", "uint32"),
        (12, "raw", "flag"),
        (13, "wash", "uint32"),
        (14, "mpu", "uint32"),
        (15, "ingress", "uint32"),
        (16, "ack_filter", "uint32"),
        (17, "split_gso", "uint32"),
        (18, "fwmark", "uint32"),
    )


class _tbf:
    nla_map = (
        (1, "TCA_TBF_PARMS", "cdata"),
        (4, "TCA_TBF_RATE64", "uint64"),
        (5, "TCA_TBF_PRATE64", "uint64"),
    )


class _htb:
    nla_map = (
        (1, "TCA_HTB_PARMS", "cdata"),
        (2, "TCA_HTB_INIT", "cdata"),
        (5, "TCA_HTB_DIRECT_QLEN", "uint32"),
        (6, "TCA_HTB_RATE64", "uint64"),
        (7, "TCA_HTB_CEIL64", "uint64"),
        (9, "TCA_HTB_OFFLOAD", "flag"),
    )


class _u32:
    nla_map = (
        (1, "TCA_U32_CLASSID", "uint32"),
        (2, "TCA_U32_HASH", "uint32"),
        (3, "TCA_U32_LINK", "uint32"),
        (4, "TCA_U32_DIVISOR", "uint32"),
        (5, "TCA_U32_SEL", "cdata"),
        (6, "TCA_U32_POLICE", "cdata"),
        (7, "TCA_U32_ACT", "cdata"),  # numbered nest of actions, walked with iter_attrs
        (8, "TCA_U32_INDEV", "asciiz"),
        (10, "TCA_U32_MARK", "cdata"),
        (11, "TCA_U32_FLAGS", "uint32"),
    )


class _act:
    nla_map = (
        (1, "TCA_ACT_KIND", "asciiz"),
        (2, "TCA_ACT_OPTIONS", "cdata"),
    )


class _police:
    nla_map = (
        (1, "TCA_POLICE_TBF", "cdata"),
        (2, "TCA_POLICE_RATE", "cdata"),
        (3, "TCA_POLICE_PEAKRATE", "cdata"),
        (5, "TCA_POLICE_RESULT", "uint32"),
        (8, "TCA_POLICE_RATE64", "uint64"),
        (9, "TCA_POLICE_PEAKRATE64", "uint64"),
    )


# struct tc_tbf_qopt: rate, peakrate (ratespecs), limit, buffer (ticks), mtu (ticks)
_TBF_QOPT = struct.Struct("=BBHhHI BBHhHI III")
# struct tc_htb_opt: rate, ceil, buffer, cbuffer (ticks), quantum, level, prio
_HTB_OPT = struct.Struct("=BBHhHI BBHhHI IIIII")
_HTB_GLOB = struct.Struct("=IIIII")  # version, rate2quantum, defcls, debug, direct_pkts
_HTB_VERSION = 3
# struct tc_police: index, action, limit, burst (ticks), mtu, rate, peakrate, refcnt,
# bindcnt, capab
_POLICE = struct.Struct("=IiIII BBHhHI BBHhHI iiI")
# struct tc_u32_sel: flags, offshift, nkeys, offmask (be), off, offoff, hoff, hmask (be)
_U32_SEL = struct.Struct("=BBBxHHhhI")
_U32_KEY = struct.Struct("=IIii")  # mask(be), val(be), off, offmask
_U32_MARK = struct.Struct("=III")  # val, mask, success
_FIFO = struct.Struct("=I")
TC_U32_TERMINAL = 1
TC_ACT_SHOT = 2

CAKE_DIFFSERV = ("diffserv3", "diffserv4", "diffserv8", "besteffort", "precedence")
CAKE_FLOW_MODES = ("flowblind", "srchost", "dsthost", "hosts", "flows", "dual-srchost",
                   "dual-dsthost", "triple-isolate")
CAKE_ACK_FILTER = ("none", "filter", "aggressive")
CAKE_ATM = ("none", "atm", "ptm")

# --------------------------------------------------------------------------------------------
# Decoded objects


@dataclass(frozen=True)
class Qdisc:
    """One qdisc as the kernel reports it; ``options`` in profile units (see the module doc),
    or None for a kind this module does not decode."""

    ifindex: int
    handle: int
    parent: int
    kind: str
    options: Mapping[str, Any] | None = None

    @property
    def is_default(self) -> bool:
        """Created by the kernel itself (noqueue, pfifo_fast, mq, fq_codel...: handle 0)."""
        return self.handle == 0


@dataclass(frozen=True)
class TcClass:
    ifindex: int
    classid: int
    parent: int  # a classid, or TC_H_ROOT for a class directly under the qdisc
    kind: str
    leaf: int  # the leaf qdisc's handle (0: the kernel's default leaf)
    options: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Filter:
    """One u32 node (or another classifier's filter, ``options`` None). For u32, ``options``
    has keys (``[[mask, val, off, offmask], ...]``), flowid (classid or 0), mark
    (``[val, mask]`` or None), police (a police action's settings or None) and ``opaque``
    (a reason this node uses what nodenetd does not model: hash tables, links, other actions)."""

    ifindex: int
    parent: int
    prio: int
    protocol: str
    kind: str
    handle: int
    options: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Request:
    """One write: what it is (for error messages), and the rtnetlink message."""

    ifindex: int
    what: str  # "qdisc root", "class 1:10", "filter 3"...
    msg_type: int
    payload: bytes = field(repr=False)


# --------------------------------------------------------------------------------------------
# Options: profile units <-> kernel attributes


def _rate64(spec_rate: int, rate64: int | None) -> int:
    return rate64 if rate64 else spec_rate


def _encode_fq(opts: Mapping[str, Any]) -> bytes:
    attrs = []
    for _, name, _fmt in _fq.nla_map:
        if name not in opts:
            continue
        value = opts[name]
        if name == "buckets":
            value = max(1, int(value)).bit_length() - 1
        elif name in ("pacing", "horizon_drop"):
            value = int(bool(value))
        attrs.append((name, int(value)))
    return encode_attrs(_fq, attrs)


def _decode_fq(data: bytes) -> dict[str, Any]:
    raw = decode_attrs(_fq, data, 0, len(data))
    out: dict[str, Any] = dict(raw)
    if "buckets" in out:
        out["buckets"] = 1 << out["buckets"]
    for name in ("pacing", "horizon_drop"):
        if name in out:
            out[name] = bool(out[name])
    return out


def _encode_fq_codel(opts: Mapping[str, Any]) -> bytes:
    attrs = []
    for _, name, _fmt in _fq_codel.nla_map:
        if name in opts:
            value = opts[name]
            attrs.append((name, int(bool(value)) if name == "ecn" else int(value)))
    return encode_attrs(_fq_codel, attrs)


def _decode_fq_codel(data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = dict(decode_attrs(_fq_codel, data, 0, len(data)))
    for name in ("target", "interval", "ce_threshold"):
        if name in out:
            out[name] = codel_us(out[name])
    if "ecn" in out:
        out["ecn"] = bool(out["ecn"])
    return out


_CAKE_ENUMS = {"diffserv": CAKE_DIFFSERV, "flow_mode": CAKE_FLOW_MODES,
               "ack_filter": CAKE_ACK_FILTER, "atm": CAKE_ATM}
_CAKE_BOOLS = ("autorate", "nat", "wash", "ingress", "split_gso")


def _encode_cake(opts: Mapping[str, Any]) -> bytes:
    attrs = []
    for _, name, _fmt in _cake.nla_map:
        if name not in opts or name == "raw":
            continue
        value = opts[name]
        if name in _CAKE_ENUMS:
            value = _CAKE_ENUMS[name].index(value)
        attrs.append((name, int(value)))
    return encode_attrs(_cake, attrs)


def _decode_cake(data: bytes) -> dict[str, Any]:
    raw = decode_attrs(_cake, data, 0, len(data))
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _CAKE_ENUMS:
            names = _CAKE_ENUMS[name]
            out[name] = names[value] if value < len(names) else value
        elif name in _CAKE_BOOLS:
            out[name] = bool(value)
        elif name != "raw":
            out[name] = value
    if raw.get("raw"):
        out.pop("overhead", None)  # raw: no overhead compensation; sending one would set it
    return out


def _encode_tbf(opts: Mapping[str, Any]) -> bytes:
    rate = int(opts["rate"])
    parms = _TBF_QOPT.pack(0, _LINKLAYER_ETHERNET, 0, 0, 0, min(rate, _U32_MAX),
                           0, 0, 0, 0, 0, 0,
                           int(opts["limit"]), burst_ticks(rate, int(opts["burst"])), 0)
    attrs: list[tuple[str, Any]] = [("TCA_TBF_PARMS", parms)]
    if rate >= _U32_MAX:
        attrs.append(("TCA_TBF_RATE64", rate))
    return encode_attrs(_tbf, attrs)


def _decode_tbf(data: bytes) -> dict[str, Any] | None:
    raw = decode_attrs(_tbf, data, 0, len(data))
    parms = raw.get("TCA_TBF_PARMS")
    if parms is None or len(parms) < _TBF_QOPT.size:
        return None
    fields = _TBF_QOPT.unpack_from(parms)
    rate = _rate64(fields[5], raw.get("TCA_TBF_RATE64"))
    peak = _rate64(fields[11], raw.get("TCA_TBF_PRATE64"))
    limit, buffer = fields[12], fields[13]
    out: dict[str, Any] = {"rate": rate, "burst": ticks_bytes(rate, buffer), "limit": limit}
    if peak:
        out["peakrate"] = peak  # not modelled: the tree reads as foreign
    return out


def _encode_htb_qdisc(opts: Mapping[str, Any]) -> bytes:
    glob = _HTB_GLOB.pack(_HTB_VERSION, int(opts.get("r2q", 10)), int(opts.get("default", 0)),
                          0, 0)
    attrs: list[tuple[str, Any]] = [("TCA_HTB_INIT", glob)]
    if "direct_qlen" in opts:
        attrs.append(("TCA_HTB_DIRECT_QLEN", int(opts["direct_qlen"])))
    return encode_attrs(_htb, attrs)


def _decode_htb_qdisc(data: bytes) -> dict[str, Any] | None:
    raw = decode_attrs(_htb, data, 0, len(data))
    glob = raw.get("TCA_HTB_INIT")
    if glob is None or len(glob) < _HTB_GLOB.size:
        return None
    _version, r2q, defcls, _debug, _direct = _HTB_GLOB.unpack_from(glob)
    out: dict[str, Any] = {"default": defcls, "r2q": r2q}
    if "TCA_HTB_DIRECT_QLEN" in raw:
        out["direct_qlen"] = raw["TCA_HTB_DIRECT_QLEN"]
    if raw.get("TCA_HTB_OFFLOAD"):
        out["offload"] = True  # not modelled
    return out


def _encode_htb_class(opts: Mapping[str, Any]) -> bytes:
    rate, ceil = int(opts["rate"]), int(opts["ceil"])
    parms = _HTB_OPT.pack(0, _LINKLAYER_ETHERNET, 0, 0, 0, min(rate, _U32_MAX),
                          0, _LINKLAYER_ETHERNET, 0, 0, 0, min(ceil, _U32_MAX),
                          burst_ticks(rate, int(opts["burst"])),
                          burst_ticks(ceil, int(opts["cburst"])),
                          int(opts.get("quantum") or 0), 0, int(opts.get("prio", 0)))
    attrs: list[tuple[str, Any]] = [("TCA_HTB_PARMS", parms)]
    if rate >= _U32_MAX:
        attrs.append(("TCA_HTB_RATE64", rate))
    if ceil >= _U32_MAX:
        attrs.append(("TCA_HTB_CEIL64", ceil))
    return encode_attrs(_htb, attrs)


def _decode_htb_class(data: bytes) -> dict[str, Any] | None:
    raw = decode_attrs(_htb, data, 0, len(data))
    parms = raw.get("TCA_HTB_PARMS")
    if parms is None or len(parms) < _HTB_OPT.size:
        return None
    f = _HTB_OPT.unpack_from(parms)
    rate = _rate64(f[5], raw.get("TCA_HTB_RATE64"))
    ceil = _rate64(f[11], raw.get("TCA_HTB_CEIL64"))
    buffer, cbuffer, quantum, level, prio = f[12:17]
    return {"rate": rate, "ceil": ceil, "burst": ticks_bytes(rate, buffer),
            "cburst": ticks_bytes(ceil, cbuffer), "quantum": quantum, "prio": prio,
            "level": level}


def _encode_fifo(opts: Mapping[str, Any]) -> bytes:
    return _FIFO.pack(int(opts["limit"])) if "limit" in opts else b""


def _decode_fifo(data: bytes) -> dict[str, Any]:
    return {"limit": _FIFO.unpack_from(data)[0]} if len(data) >= _FIFO.size else {}


_QDISC_CODECS: dict[str, tuple[Any, Any]] = {
    "fq": (_encode_fq, _decode_fq),
    "fq_codel": (_encode_fq_codel, _decode_fq_codel),
    "cake": (_encode_cake, _decode_cake),
    "tbf": (_encode_tbf, _decode_tbf),
    "htb": (_encode_htb_qdisc, _decode_htb_qdisc),
    "pfifo": (_encode_fifo, _decode_fifo),
    "bfifo": (_encode_fifo, _decode_fifo),
    "mq": (lambda opts: b"", lambda data: {}),
    "noqueue": (lambda opts: b"", lambda data: {}),
    "pfifo_fast": (lambda opts: b"", lambda data: {}),
    "ingress": (lambda opts: b"", lambda data: {}),
    "clsact": (lambda opts: b"", lambda data: {}),
}
# Kinds the kernel can change in place (a .change op); htb, mq, pfifo_fast, noqueue and
# ingress have none, so the same kind with other options needs a new qdisc.
CHANGEABLE = frozenset({"fq", "fq_codel", "cake", "tbf", "pfifo", "bfifo"})


# --------------------------------------------------------------------------------------------
# u32 and police


def _encode_police(police: Mapping[str, Any]) -> bytes:
    rate = int(police["rate"])
    burst = burst_ticks(rate, int(police["burst"]))
    mtu = int(police.get("mtu", _U32_MAX))
    cell_log = 3  # tc's rate table for mtu 2047: 256 cells of 8 bytes
    spec_rate = min(rate, _U32_MAX)
    tbf = _POLICE.pack(0, TC_ACT_SHOT, 0, burst, mtu,
                       cell_log, _LINKLAYER_ETHERNET, 0, -1, 0, spec_rate,
                       0, 0, 0, 0, 0, 0, 0, 0, 0)
    rtab = struct.pack("=256I", *(burst_ticks(rate, (i + 1) << cell_log) for i in range(256)))
    attrs: list[tuple[str, Any]] = [("TCA_POLICE_TBF", tbf), ("TCA_POLICE_RATE", rtab)]
    if rate >= _U32_MAX:
        attrs.append(("TCA_POLICE_RATE64", rate))
    return encode_attrs(_police, attrs)


def _decode_police(data: bytes) -> tuple[dict[str, Any] | None, str | None]:
    raw = decode_attrs(_police, data, 0, len(data))
    tbf = raw.get("TCA_POLICE_TBF")
    if tbf is None or len(tbf) < _POLICE.size:
        return None, "police action without parameters"
    f = _POLICE.unpack_from(tbf)
    action, burst, mtu, rate, peak = f[1], f[3], f[4], f[10], f[16]
    rate = _rate64(rate, raw.get("TCA_POLICE_RATE64"))
    if action != TC_ACT_SHOT or raw.get("TCA_POLICE_RESULT"):
        return None, "police action other than 'conform pass, exceed drop'"
    if peak or raw.get("TCA_POLICE_PEAKRATE64"):
        return None, "police action with a peak rate"
    return {"rate": rate, "burst": ticks_bytes(rate, burst), "mtu": mtu}, None


def _encode_u32(opts: Mapping[str, Any]) -> bytes:
    keys = opts.get("keys") or [[0, 0, 0, 0]]
    sel = _U32_SEL.pack(TC_U32_TERMINAL, 0, len(keys), 0, 0, 0, 0, 0)
    sel += b"".join(_U32_KEY.pack(mask, val, off, offmask) for mask, val, off, offmask in
                    ((socket.htonl(k[0]), socket.htonl(k[1]), k[2], k[3]) for k in keys))
    attrs: list[tuple[str, Any]] = []
    if opts.get("flowid"):
        attrs.append(("TCA_U32_CLASSID", int(opts["flowid"])))
    attrs.append(("TCA_U32_SEL", sel))
    if opts.get("mark"):
        val, mask = opts["mark"]
        attrs.append(("TCA_U32_MARK", _U32_MARK.pack(val, mask, 0)))
    if opts.get("police"):
        act = encode_attrs(_act, [("TCA_ACT_KIND", "police"),
                                  ("TCA_ACT_OPTIONS", _encode_police(opts["police"]))])
        attrs.append(("TCA_U32_ACT", nla(1, act)))
    return encode_attrs(_u32, attrs)


_NLA = struct.Struct("=HH")
_U32_ATTRS = {1: "classid", 3: "link", 4: "divisor", 5: "sel", 6: "police", 7: "act",
              8: "indev", 10: "mark"}


def _spans(data: bytes, start: int, end: int, wanted: Mapping[int, str]) -> dict[str, tuple]:
    """{name: (payload start, payload end)} of the attributes ``wanted`` names: one pass, no
    copies (a filter dump has a dozen attributes per node and thousands of nodes)."""
    found: dict[str, tuple] = {}
    unpack = _NLA.unpack_from
    while start + 4 <= end:
        length, atype = unpack(data, start)
        if length < 4:
            break
        name = wanted.get(atype & 0x3FFF)
        if name is not None:
            found[name] = (start + 4, start + length)
        start += (length + 3) & ~3
    return found


def _decode_u32(data: bytes, start: int = 0, end: int | None = None) -> dict[str, Any]:
    end = len(data) if end is None else end
    at = _spans(data, start, end, _U32_ATTRS)
    if "divisor" in at:
        return {"hash_table": struct.unpack_from("=I", data, at["divisor"][0])[0]}
    flowid = struct.unpack_from("=I", data, at["classid"][0])[0] if "classid" in at else 0
    out: dict[str, Any] = {"keys": [], "flowid": flowid, "mark": None, "police": None,
                           "opaque": None}
    if "sel" not in at or at["sel"][1] - at["sel"][0] < _U32_SEL.size:
        out["opaque"] = "u32 node without a selector"
        return out
    base = at["sel"][0]
    flags, offshift, nkeys, offmask, off, offoff, hoff, hmask = _U32_SEL.unpack_from(data, base)
    keys = out["keys"]
    ntohl = socket.ntohl
    for i in range(nkeys):
        mask, val, koff, koffmask = _U32_KEY.unpack_from(data, base + _U32_SEL.size + 16 * i)
        keys.append([ntohl(mask), ntohl(val), koff, koffmask])
        if koffmask:
            out["opaque"] = "u32 keys relative to a next header"
    if flags != TC_U32_TERMINAL or offshift or offmask or off or offoff or hoff or hmask:
        out["opaque"] = "u32 node with offsets or hashing"
    if "link" in at or "indev" in at or "police" in at:
        out["opaque"] = "u32 node with a link, indev or legacy police"
    if "mark" in at:
        val, mask, _success = _U32_MARK.unpack_from(data, at["mark"][0])
        out["mark"] = [val, mask]
    if "act" in at:
        act = bytes(data[at["act"][0]:at["act"][1]])
        actions = [decode_attrs(_act, act, begin, stop) for _n, begin, stop in
                   iter_attrs(act, 0, len(act))]
        if len(actions) != 1 or actions[0].get("TCA_ACT_KIND") != "police":
            out["opaque"] = "u32 node with actions other than one police"
        else:
            police, why = _decode_police(actions[0].get("TCA_ACT_OPTIONS", b""))
            out["police"] = police
            if why:
                out["opaque"] = why
    return out


# --------------------------------------------------------------------------------------------
# Messages


def _decode_header(data: bytes, offset: int, length: int) -> tuple[tuple, dict]:
    header = _TCMSG.unpack_from(data, offset + NLMSGHDR.size)
    attrs = decode_attrs(_tca, data, offset + _PAYLOAD, offset + length)
    return header, attrs


def decode_qdisc(data: bytes, offset: int, length: int) -> Qdisc:
    (_f, _p1, _p2, ifindex, handle, parent, _info), attrs = _decode_header(data, offset, length)
    kind = attrs.get("TCA_KIND", "")
    codec = _QDISC_CODECS.get(kind)
    options = None
    if codec is not None:
        options = codec[1](attrs.get("TCA_OPTIONS", b""))
    return Qdisc(ifindex, handle, parent, kind, options)


def decode_class(data: bytes, offset: int, length: int) -> TcClass:
    _f, _p1, _p2, ifindex, handle, parent, info = _TCMSG.unpack_from(data, offset + NLMSGHDR.size)
    at = _spans(data, offset + _PAYLOAD, offset + length, _TCA_SPANS)
    kind = ""
    if "kind" in at:
        begin, stop = at["kind"]
        kind = bytes(data[begin:stop]).split(b"\0", 1)[0].decode(errors="replace")
    options = None
    if kind == "htb" and "options" in at:
        begin, stop = at["options"]
        options = _decode_htb_class(bytes(data[begin:stop]))
    return TcClass(ifindex, handle, parent, kind, info, options)


def decode_filter(data: bytes, offset: int, length: int) -> Filter:
    _f, _p1, _p2, ifindex, handle, parent, info = _TCMSG.unpack_from(data, offset + NLMSGHDR.size)
    if handle == 0:  # a classifier's own entry (every dump has one per priority): no options
        kind = _kind_only(data, offset + _PAYLOAD, offset + length)
        proto = socket.ntohs(info & 0xFFFF)
        return Filter(ifindex, parent, info >> 16, _ETH_P_NAMES.get(proto, f"0x{proto:04x}"),
                      kind, 0, None)
    at = _spans(data, offset + _PAYLOAD, offset + length, _TCA_SPANS)
    kind = ""
    if "kind" in at:
        begin, stop = at["kind"]
        kind = bytes(data[begin:stop]).split(b"\0", 1)[0].decode(errors="replace")
    proto = socket.ntohs(info & 0xFFFF)
    protocol = _ETH_P_NAMES.get(proto, f"0x{proto:04x}")
    options = None
    if kind == "u32" and "options" in at:
        options = _decode_u32(data, *at["options"])
    return Filter(ifindex, parent, info >> 16, protocol, kind, handle, options)


_TCA_SPANS = {1: "kind", 2: "options"}


def _kind_only(data: bytes, start: int, end: int) -> str:
    for atype, begin, stop in iter_attrs(data, start, end):
        if atype == 1:  # TCA_KIND
            return bytes(data[begin:stop]).split(b"\0", 1)[0].decode(errors="replace")
    return ""


def _tcmsg(ifindex: int, handle: int, parent: int, info: int = 0) -> bytes:
    return _TCMSG.pack(socket.AF_UNSPEC, 0, 0, ifindex, handle, parent, info)


def _where(parent: int) -> str:
    return {TC_H_ROOT: "root", TC_H_INGRESS: "ingress"}.get(parent, f"parent {handle_text(parent)}")


def new_qdisc(ifindex: int, parent: int, handle: int, kind: str,
              options: Mapping[str, Any] | None = None) -> Request:
    """Create or change (replace semantics) the qdisc at ``parent``. ``handle`` 0 lets the
    kernel pick one (and changes a same-kind qdisc already there)."""
    encode = _QDISC_CODECS[kind][0]
    attrs: list[tuple[str, Any]] = [("TCA_KIND", kind)]
    body = encode(options or {})
    if body or kind in ("htb", "tbf"):
        attrs.append(("TCA_OPTIONS", body))
    payload = _tcmsg(ifindex, handle, parent) + encode_attrs(_tca, attrs)
    return Request(ifindex, f"{kind} qdisc {_where(parent)}", RTM_NEWQDISC, payload)


def del_qdisc(ifindex: int, parent: int, handle: int = 0) -> Request:
    """Delete the qdisc at ``parent`` (root: the kernel attaches its default again)."""
    payload = _tcmsg(ifindex, handle, parent)
    return Request(ifindex, f"delete qdisc {_where(parent)}", RTM_DELQDISC, payload)


def new_class(ifindex: int, parent: int, classid: int, options: Mapping[str, Any]) -> Request:
    """Create or change an htb class."""
    attrs = [("TCA_KIND", "htb"), ("TCA_OPTIONS", _encode_htb_class(options))]
    payload = _tcmsg(ifindex, classid, parent) + encode_attrs(_tca, attrs)
    return Request(ifindex, f"htb class {handle_text(classid)}", RTM_NEWTCLASS, payload)


def del_class(ifindex: int, classid: int) -> Request:
    payload = _tcmsg(ifindex, classid, 0)
    return Request(ifindex, f"delete class {handle_text(classid)}", RTM_DELTCLASS, payload)


def _info(prio: int, protocol: str) -> int:
    return (prio << 16) | socket.htons(ETH_P[protocol])


def new_filter(ifindex: int, parent: int, prio: int, protocol: str,
               options: Mapping[str, Any], handle: int = 0) -> Request:
    """Add a u32 node at ``prio`` (``handle`` 0: a new node; a node's handle: change its
    classid and actions in place, the selector stays)."""
    attrs = [("TCA_KIND", "u32"), ("TCA_OPTIONS", _encode_u32(options))]
    payload = _tcmsg(ifindex, handle, parent, _info(prio, protocol)) + encode_attrs(_tca, attrs)
    return Request(ifindex, f"u32 filter prio {prio} {protocol}", RTM_NEWTFILTER, payload)


def del_filter(ifindex: int, parent: int, prio: int, protocol: str) -> Request:
    """Delete every node of the u32 classifier at ``prio``/``protocol``."""
    attrs = [("TCA_KIND", "u32")]
    payload = _tcmsg(ifindex, 0, parent, _info(prio, protocol)) + encode_attrs(_tca, attrs)
    return Request(ifindex, f"delete filter prio {prio} {protocol}", RTM_DELTFILTER, payload)


# Modules this process saw the kernel refuse as missing (the plan skips what needs them).
_MISSING: set[str] = set()


def kernel_lacks(module: str) -> bool:
    """Whether the running kernel cannot have ``module`` (sch_fq, cls_u32, act_police): it
    is not loaded, not built in and not installed (/sys/module, modules.builtin and
    modules.dep of /lib/modules/RELEASE), or a write already found it missing. When the
    module lists are not there (a kernel without /lib/modules), only a write can tell."""
    if module in _MISSING:
        return True
    if os.path.exists(f"/sys/module/{module}"):
        return False
    return _not_installed(module)


@functools.cache
def _not_installed(module: str) -> bool:
    base = Path("/lib/modules") / os.uname().release
    names = ("modules.builtin", "modules.dep")
    try:
        texts = [(base / name).read_text() for name in names]
    except OSError:
        return False  # unknown: try, and learn from the kernel's answer
    wanted = f"/{module}.ko"
    for text in texts:
        for line in text.splitlines():
            path = line.split(":", 1)[0]
            if wanted in path and (path.endswith(".ko") or ".ko." in path):
                return False
    return True


def _typed_error(failure: NetlinkFailure, target: str, request: Request) -> KernelError:
    """ENOENT with "kind is unknown" / "classifier not found" / "Failed to load TC action
    module": this kernel lacks the qdisc, classifier or action (Unsupported)."""
    message = failure.extack or ""
    if failure.code == errno.ENOENT:
        missing = module = None
        if "qdisc kind is unknown" in message:
            kind = request.what.split()[0]
            missing, module = f"no {kind} qdisc (sch_{kind})", f"sch_{kind}"
        elif "classifier not found" in message:
            missing, module = "no u32 classifier (cls_u32)", "cls_u32"
        elif "action module" in message:
            missing, module = "no police action (act_police)", "act_police"
        if missing and module:
            _MISSING.add(module)
            return Unsupported(target, f"qdisc: {request.what}",
                               f"this kernel has {missing}: {failure.describe()}", failure.code)
    return kernel_error(failure, target, f"qdisc: {request.what}")


class Tc:
    """The tc side of the kernel adapter: one rtnetlink socket, in the namespace the caller is
    in or in the named one (``/run/netns/NAME``). Use it as a context manager, or ``close``."""

    def __init__(self, netns: str | None = None, *, timeout: float = 5.0) -> None:
        if netns is None:
            self._nl = NetlinkSocket(socket.NETLINK_ROUTE, timeout=timeout)
        else:
            self._nl = socket_in_netns(netns, timeout=timeout)

    def close(self) -> None:
        self._nl.close()

    def __enter__(self) -> Tc:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reads

    def dump_qdiscs(self) -> list[Qdisc]:
        """Every qdisc of every interface (the kernel's default and builtin ones included,
        except noop: a device that is down and was never up has no root qdisc to report)."""
        try:
            return self._nl.dump(RTM_GETQDISC, _tcmsg(0, 0, 0), decode=decode_qdisc)
        except NetlinkFailure as failure:
            raise kernel_error(failure, "kernel", "qdiscs") from None

    def dump_classes(self, ifindex: int) -> list[TcClass]:
        try:
            return self._nl.dump(RTM_GETTCLASS, _tcmsg(ifindex, 0, 0), decode=decode_class)
        except NetlinkFailure as failure:
            raise kernel_error(failure, f"ifindex {ifindex}", "qdisc classes") from None

    def dump_filters(self, ifindex: int, parent: int) -> list[Filter]:
        """The filters attached to qdisc ``parent`` (a handle: 1:0, ffff:0), nodes only (the
        per-classifier and hash-table entries of a u32 dump are dropped)."""
        try:
            found = self._nl.dump(RTM_GETTFILTER, _tcmsg(ifindex, 0, parent),
                                  decode=decode_filter)
        except NetlinkFailure as failure:
            raise kernel_error(failure, f"ifindex {ifindex}", "qdisc filters") from None
        nodes = []
        for item in found:
            if item.handle == 0 and item.options is None and item.kind == "u32":
                continue  # the classifier itself
            if (item.kind == "u32" and item.options and item.options.get("hash_table") == 1
                    and item.handle & 0xFFFFF == 0):
                continue  # the classifier's own root hash table
            nodes.append(item)
        return nodes

    def tx_queues(self) -> dict[int, int]:
        """{ifindex: number of TX queues the device has} (what mq makes children for), from
        one link dump without statistics."""

        def decode(data: bytes, offset: int, length: int) -> tuple[int, int]:
            (index,) = struct.unpack_from("=i", data, offset + NLMSGHDR.size + 4)
            attrs = decode_attrs(_ifla, data, offset + NLMSGHDR.size + _IFINFOMSG.size,
                                 offset + length)
            return index, attrs.get("IFLA_NUM_TX_QUEUES", 1)

        payload = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + encode_attrs(
            _ifla, [("IFLA_EXT_MASK", _RTEXT_FILTER_SKIP_STATS)])
        try:
            return dict(self._nl.dump(_RTM_GETLINK, payload, decode=decode))
        except NetlinkFailure as failure:
            raise kernel_error(failure, "kernel", "links") from None

    # -- writes

    def run(self, requests: Sequence[Request], names: Mapping[int, str] | None = None
            ) -> list[KernelError | None]:
        """Send requests pipelined, in order; one result per request (None: done)."""
        outcomes = self._nl.request_many([(r.msg_type, r.payload) for r in requests],
                                         flags=_WRITE_FLAGS)
        results: list[KernelError | None] = []
        for request, outcome in zip(requests, outcomes, strict=True):
            if isinstance(outcome, NetlinkFailure):
                target = (names or {}).get(request.ifindex, f"ifindex {request.ifindex}")
                results.append(_typed_error(outcome, target, request))
            else:
                results.append(None)
        return results


def u32_keys(match: Mapping[str, Any], protocol: str) -> list[list[int]]:
    """u32 keys ``[mask, value, offset, 0]`` (offsets from the network header) for a match of
    dscp, ipproto, sport and dport, as nodenetd's classes and filters use them.

    IPv4 port matches also require a 20-byte header (IHL 5), and IPv6 ones a transport header
    right after the fixed header: a packet with IP options or extension headers is left
    unclassified (the default class) rather than matched at the wrong place.
    """
    words: dict[int, list[int]] = {}

    def put(off: int, mask: int, value: int) -> None:
        slot = words.setdefault(off, [0, 0])
        slot[0] |= mask
        slot[1] |= value & mask

    ports = "sport" in match or "dport" in match
    if protocol == "ip":
        if "dscp" in match:
            put(0, 0x00FC0000, match["dscp"] << 18)
        if ports:
            put(0, 0x0F000000, 0x05000000)
        if "ipproto" in match:
            put(8, 0x00FF0000, match["ipproto"] << 16)
        transport = 20
    elif protocol == "ipv6":
        if "dscp" in match:
            put(0, 0x0FC00000, match["dscp"] << 22)
        if "ipproto" in match:
            put(4, 0x0000FF00, match["ipproto"] << 8)
        transport = 40
    else:
        transport = 0
    if "sport" in match:
        put(transport, 0xFFFF0000, match["sport"] << 16)
    if "dport" in match:
        put(transport, 0x0000FFFF, match["dport"])
    if not words:
        return [[0, 0, 0, 0]]
    return [[mask, value, off, 0] for off, (mask, value) in sorted(words.items())]


def u32_match(keys: Sequence[Sequence[int]], protocol: str) -> dict[str, int] | None:
    """The match ``u32_keys`` would have made these keys from, or None."""
    fields: dict[str, int] = {}
    for mask, value, off, offmask in keys:
        if offmask:
            return None
        if (mask, value) == (0, 0):
            continue
        if protocol == "ip" and off == 0:
            if mask & 0x00FC0000:
                fields["dscp"] = (value & 0x00FC0000) >> 18
            rest = mask & ~0x00FC0000 & ~0x0F000000
            if rest:
                return None
        elif protocol == "ip" and off == 8 and mask == 0x00FF0000:
            fields["ipproto"] = value >> 16
        elif protocol == "ipv6" and off == 0 and mask == 0x0FC00000:
            fields["dscp"] = value >> 22
        elif protocol == "ipv6" and off == 4 and mask == 0x0000FF00:
            fields["ipproto"] = value >> 8
        elif off == {"ip": 20, "ipv6": 40}.get(protocol):
            if mask & 0xFFFF0000:
                fields["sport"] = value >> 16
            if mask & 0x0000FFFF:
                fields["dport"] = value & 0xFFFF
        else:
            return None
    made = u32_keys(fields, protocol)
    normal = [list(k) for k in keys if list(k) != [0, 0, 0, 0]] or [[0, 0, 0, 0]]
    return fields if made == normal else None


def describe_rate(rate: int) -> str:
    """bytes/s as tc writes bit rates: 50mbit, 1gbit, 1.5mbit."""
    bits = rate * 8
    for unit, scale in (("tbit", 10**12), ("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bits >= scale:
            return f"{bits / scale:.3f}".rstrip("0").rstrip(".") + unit
    return f"{bits}bit"


def describe_size(size: int) -> str:
    for unit, scale in (("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}b"


def describe_time(us: int) -> str:
    if us % 1_000_000 == 0 and us:
        return f"{us // 1_000_000}s"
    if us % 1000 == 0 and us:
        return f"{us // 1000}ms"
    return f"{us}us"
