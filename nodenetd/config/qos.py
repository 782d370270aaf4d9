"""An interface rule's ``qdisc:`` and ``ingress:`` (tc QoS): from YAML to the desired value, and
the checks a schema cannot make.

The schema (``profile.schema.json#/$defs/qdisc``, ``#/$defs/ingress``) checks the shape: one
qdisc kind per rule, known option names, types. Here units are parsed (rates ``50mbit``,
sizes ``64kb``, times ``10ms``, shares ``20%``), and the rest is checked, every problem at
the line it is about: htb class shares summing over 100 %, a ceil below its share, unknown
DSCP names and a DSCP value given to two classes, a default or filter class that does not
exist, ports without a TCP/UDP/SCTP protocol, fq buckets that are not a power of two.

The value built is plain JSON (the journal stores it; see ``nodenetd.tuning.kinds.qdisc``):

- ``{"kind": "default", "default": true}``: whatever root qdisc the kernel attaches itself;
- ``{"kind": "fq" | "fq_codel" | "cake" | "tbf", "options": {...}}``; ``options`` holds only
  what the profile sets (rates in bytes/s, sizes in bytes, times in microseconds);
- ``{"kind": "mq", "child": <one of the above>}``: that qdisc on every TX queue;
- ``{"kind": "htb", "options": {"default": minor, "r2q": n}, "classes": [...],
  "filters": [...]}``: a root class (minor 1) at the htb's rate, one class per named class
  under it (minors 0x10, 0x20... in the order written), u32 filters with ``prio``,
  ``protocol``, ``match`` (dscp, ipproto, sport, dport) or ``mark``, and ``flowid`` (a minor);
- ingress: ``{"kind": "ingress", "police": {"rate": ..., "burst": ..., "mtu": ...}}``.

Filter order (u32 priorities): a rule's explicit ``filters`` first, in the order written (the
more specific matches win), then the classes' DSCP lists, IPv4 then IPv6.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = [
    "DSCP_NAMES",
    "QosIssue",
    "build_ingress",
    "build_qdisc",
    "check_ingress",
    "check_qdisc",
    "parse_rate",
    "parse_size",
    "parse_time",
]

# RFC 2474 class selectors, RFC 2597 assured forwarding, RFC 3246 expedited forwarding,
# RFC 5865 voice-admit, RFC 8622 lower effort.
DSCP_NAMES: dict[str, int] = {
    "default": 0, "be": 0, "le": 1, "ef": 46, "va": 44,
    **{f"cs{i}": i * 8 for i in range(8)},
    **{f"af{c}{d}": c * 8 + d * 2 for c in range(1, 5) for d in range(1, 4)},
}
IP_PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "sctp": 132}
_PORT_PROTOCOLS = (6, 17, 132)
QDISC_KINDS = ("fq", "fq_codel", "cake", "mq", "tbf", "htb")
MQ_CHILD_KINDS = ("fq", "fq_codel", "cake", "default")

UNLIMITED = 0xFFFFFFFF
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12}
_SIZE_UNITS = {"b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
               "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}
_TIME_UNITS = {"us": 1, "usec": 1, "ms": 1000, "msec": 1000, "s": 10**6, "sec": 10**6}
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z%]*)\s*$")
_MARK = re.compile(r"^\s*(0x[0-9a-fA-F]+|\d+)\s*(?:/\s*(0x[0-9a-fA-F]+|\d+))?\s*$")

RATE_EXPECTED = "a rate such as 50mbit, 1gbit or 800kbit"
SIZE_EXPECTED = "a size such as 1514, 64kb or 1mb"
TIME_EXPECTED = "a time such as 100us, 5ms or 10s"
SHARE_EXPECTED = "a share of the htb rate such as 20%, or a rate such as 200mbit"
_HTB_DEFAULT_R2Q = 10
_TBF_DEFAULT_LATENCY_US = 50_000
_BURST_FLOOR = 1600  # tc's default htb burst (its assumed MTU of 1600 bytes)

Path = tuple[str | int, ...]


class QosIssue(ValueError):
    """One problem: where (a key path below ``qdisc:``/``ingress:``), what, what is expected."""

    def __init__(self, path: Path, message: str, expected: str | None = None,
                 hint: str | None = None, *, key: bool = False):
        super().__init__(message)
        self.path = path
        self.message = message
        self.expected = expected
        self.hint = hint
        self.key = key


# --------------------------------------------------------------------------------------------
# Units


def _number_unit(value: Any) -> tuple[float, str] | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value), ""
    if not isinstance(value, str):
        return None
    found = _NUMBER_UNIT.match(value)
    return (float(found.group(1)), found.group(2).lower()) if found else None


def parse_rate(value: Any) -> int:
    """A bit rate (``50mbit``; tc's units, decimal) -> bytes per second. Plain numbers are
    refused: tc reads them as bytes per second, people mean bits."""
    parsed = _number_unit(value)
    if parsed is None or parsed[1] not in _RATE_UNITS:
        raise ValueError(f"invalid rate {value!r}")
    bits = parsed[0] * _RATE_UNITS[parsed[1]]
    rate = int(bits // 8)
    if rate < 1:
        raise ValueError(f"rate {value!r} is below 8bit")
    return rate


def parse_size(value: Any) -> int:
    """A size in bytes: a number, or with b, kb (1024), mb, gb as tc reads them."""
    parsed = _number_unit(value)
    if parsed is None or (parsed[1] and parsed[1] not in _SIZE_UNITS):
        raise ValueError(f"invalid size {value!r}")
    return int(parsed[0] * _SIZE_UNITS.get(parsed[1], 1))


def parse_time(value: Any) -> int:
    """A time with its unit (us, ms, s) -> microseconds."""
    parsed = _number_unit(value)
    if parsed is None or parsed[1] not in _TIME_UNITS:
        raise ValueError(f"invalid time {value!r}")
    return round(parsed[0] * _TIME_UNITS[parsed[1]])


def _parse_share(value: Any, total: int) -> tuple[int, float]:
    """(bytes/s, percent of total) of ``20%`` or ``200mbit``."""
    if isinstance(value, str) and value.strip().endswith("%"):
        parsed = _number_unit(value)
        if parsed is None:
            raise ValueError(f"invalid share {value!r}")
        return int(total * parsed[0] / 100), parsed[0]
    rate = parse_rate(value)
    return rate, 100.0 * rate / total


def parse_dscp(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 63:
        return value
    if isinstance(value, str) and value.lower() in DSCP_NAMES:
        return DSCP_NAMES[value.lower()]
    raise ValueError(f"unknown DSCP {value!r}")


# --------------------------------------------------------------------------------------------
# The builder: collects every issue, returns the value built from what was valid


class _Builder:
    def __init__(self) -> None:
        self.issues: list[QosIssue] = []

    def issue(self, path: Path, message: str, expected: str | None = None,
              hint: str | None = None, *, key: bool = False) -> None:
        self.issues.append(QosIssue(path, message, expected, hint, key=key))

    def parse(self, path: Path, value: Any, how, expected: str) -> Any:
        try:
            return how(value)
        except ValueError as exc:
            self.issue(path, str(exc), expected)
            return None

    # -- options shared by kinds

    def options(self, raw: Any, path: Path, spec: dict[str, Any]) -> dict[str, Any]:
        """Parse a kind's options by ``spec``: {name: parser}; unknown names are the
        schema's to report."""
        out: dict[str, Any] = {}
        if not isinstance(raw, dict):
            return out
        for name, value in raw.items():
            how = spec.get(name)
            if how is None:
                continue
            parsed = how(self, (*path, name), value)
            if parsed is not None:
                out[name] = parsed
        return out


def _int(builder: _Builder, path: Path, value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bool(builder: _Builder, path: Path, value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _rate(builder: _Builder, path: Path, value: Any) -> int | None:
    if not isinstance(value, str):
        return None  # the schema reports the type
    return builder.parse(path, value, parse_rate, RATE_EXPECTED)


def _rate_or_unlimited(builder: _Builder, path: Path, value: Any) -> int | None:
    if value == "unlimited":
        return UNLIMITED
    rate = _rate(builder, path, value)
    if rate is not None and rate >= UNLIMITED:
        builder.issue(path, f"rate {value!r} is too high for fq's maxrate", "at most 34gbit, "
                      "or unlimited")
        return None
    return rate


def _size(builder: _Builder, path: Path, value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None  # the schema reports the type
    return builder.parse(path, value, parse_size, SIZE_EXPECTED)


def _time(builder: _Builder, path: Path, value: Any) -> int | None:
    if not isinstance(value, str):
        return None  # the schema reports the type
    return builder.parse(path, value, parse_time, TIME_EXPECTED)


def _time_or_off(builder: _Builder, path: Path, value: Any) -> int | None:
    return UNLIMITED if value == "off" else _time(builder, path, value)


def _ns(builder: _Builder, path: Path, value: Any) -> int | None:
    us = _time(builder, path, value)
    return None if us is None else us * 1000


def _buckets(builder: _Builder, path: Path, value: Any) -> int | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    if value & (value - 1) or not 2 <= value <= 262144:
        up = 1 << max(1, value - 1).bit_length()
        builder.issue(path, f"{value} buckets is not a power of two from 2 to 262144",
                      "a power of two (fq keeps the log2)",
                      f"did you mean {min(max(up, 2), 262144)}?")
        return None
    return value


def _enum(*words: str):
    def parse(builder: _Builder, path: Path, value: Any) -> str | None:
        return value if value in words else None
    return parse


def _ack_filter(builder: _Builder, path: Path, value: Any) -> str | None:
    if value is True:
        return "filter"
    if value is False:
        return "none"
    return "aggressive" if value == "aggressive" else None


def _cake_bandwidth(builder: _Builder, path: Path, value: Any) -> int | None:
    return 0 if value == "unlimited" else _rate(builder, path, value)


FQ_OPTIONS = {
    "limit": _int, "flow_limit": _int, "quantum": _size, "initial_quantum": _size,
    "pacing": _bool, "maxrate": _rate_or_unlimited, "buckets": _buckets, "orphan_mask": _int,
    "low_rate_threshold": _rate, "ce_threshold": _time_or_off, "timer_slack": _ns,
    "horizon": _time, "horizon_drop": _bool,
}
FQ_CODEL_OPTIONS = {
    "limit": _int, "flows": _int, "target": _time, "interval": _time, "ecn": _bool,
    "quantum": _size, "ce_threshold": _time, "drop_batch_size": _int, "memory_limit": _size,
}
CAKE_OPTIONS = {
    "bandwidth": _cake_bandwidth,
    "diffserv": _enum("diffserv3", "diffserv4", "diffserv8", "besteffort", "precedence"),
    "flow_mode": _enum("flowblind", "srchost", "dsthost", "hosts", "flows", "dual-srchost",
                       "dual-dsthost", "triple-isolate"),
    "rtt": _time, "nat": _bool, "wash": _bool, "ack_filter": _ack_filter,
    "split_gso": _bool, "memlimit": _size, "fwmark": _int, "overhead": _int, "mpu": _int,
}
_SIMPLE = {"fq": FQ_OPTIONS, "fq_codel": FQ_CODEL_OPTIONS, "cake": CAKE_OPTIONS}


def _simple(builder: _Builder, kind: str, raw: Any, path: Path) -> dict[str, Any]:
    return {"kind": kind, "options": builder.options(raw, path, _SIMPLE[kind])}


def _one_kind(raw: Any) -> tuple[str, Any] | None:
    """``fq`` -> (fq, None); ``{fq: {...}}`` -> (fq, {...}); None when not one kind."""
    if isinstance(raw, str):
        return raw, None
    items = [(k, v) for k, v in raw.items() if k != "override"] if isinstance(raw, dict) else []
    return items[0] if len(items) == 1 else None


def _build_qdisc(builder: _Builder, raw: Any) -> dict[str, Any] | None:
    if raw == "default":
        return {"kind": "default", "default": True}
    picked = _one_kind(raw)
    if isinstance(raw, dict):
        kinds = [k for k in raw if k in QDISC_KINDS]
        if len(kinds) > 1:
            builder.issue((kinds[1],), f"a second qdisc kind ({', '.join(kinds)})",
                          "one root qdisc kind per rule", key=True)
            picked = (kinds[0], raw[kinds[0]])
    if picked is None or picked[0] not in QDISC_KINDS:
        return None  # the schema says what is wrong
    kind, body = picked
    path: Path = (kind,) if isinstance(raw, dict) else ()
    if kind in _SIMPLE:
        return _simple(builder, kind, body, path)
    if kind == "mq":
        return _build_mq(builder, body, path)
    if kind == "tbf":
        return _build_tbf(builder, body, path)
    return _build_htb(builder, body, path)


def _build_mq(builder: _Builder, body: Any, path: Path) -> dict[str, Any] | None:
    child_raw = body.get("child", "default") if isinstance(body, dict) else "default"
    if child_raw == "default":
        return {"kind": "mq", "child": {"kind": "default", "default": True}}
    picked = _one_kind(child_raw)
    if picked is None or picked[0] not in _SIMPLE:
        return None
    kind, child_body = picked
    child_path: Path = (*path, "child") + ((kind,) if isinstance(child_raw, dict) else ())
    return {"kind": "mq", "child": _simple(builder, kind, child_body, child_path)}


def _build_tbf(builder: _Builder, body: Any, path: Path) -> dict[str, Any] | None:
    if not isinstance(body, dict) or "rate" not in body or "burst" not in body:
        return None
    rate = _rate(builder, (*path, "rate"), body["rate"])
    burst = _size(builder, (*path, "burst"), body["burst"])
    if rate is None or burst is None:
        return None
    if "limit" in body and "latency" in body:
        builder.issue((*path, "latency"), "tbf takes limit or latency, not both",
                      "limit (bytes queued) or latency (the longest a packet may wait)",
                      key=True)
    if "limit" in body:
        limit = _size(builder, (*path, "limit"), body["limit"])
    else:
        latency = (_time(builder, (*path, "latency"), body["latency"]) if "latency" in body
                   else _TBF_DEFAULT_LATENCY_US)
        limit = None if latency is None else rate * latency // 10**6 + burst  # as tc computes
    if limit is None:
        return None
    return {"kind": "tbf", "options": {"rate": rate, "burst": burst, "limit": limit}}


def _default_burst(rate: int) -> int:
    """A class burst of 1 ms at its rate, at least tc's 1600 bytes: HTB refills tokens from a
    timer, and a burst much smaller than a timer tick's worth of bytes cannot reach the rate."""
    return max(_BURST_FLOOR, rate // 1000)


def _default_quantum(rate: int, r2q: int) -> int:
    """The kernel's rate/r2q, clamped to 1000..200000 as the kernel does, sent explicitly so it
    does not log a warning for every class it clamps."""
    return min(max(rate // r2q, 1000), 200000)


def _build_htb(builder: _Builder, body: Any, path: Path) -> dict[str, Any] | None:
    if not isinstance(body, dict) or not isinstance(body.get("classes"), dict):
        return None
    total = _rate(builder, (*path, "rate"), body.get("rate")) if "rate" in body else None
    known = total is not None  # without the rate, shares cannot be checked; the rest can
    total = total or 1
    r2q = body.get("r2q", _HTB_DEFAULT_R2Q)
    if not isinstance(r2q, int) or isinstance(r2q, bool) or r2q < 1:
        return None
    classes: list[dict[str, Any]] = [{
        "minor": 1, "parent": 0, "name": "(all)", "rate": total, "ceil": total,
        "burst": _default_burst(total), "cburst": _default_burst(total), "prio": 0,
        "quantum": _default_quantum(total, r2q),
    }]
    minors: dict[str, int] = {}
    dscp_owner: dict[int, str] = {}
    dscp_filters: list[tuple[int, int]] = []
    shares = 0.0
    classes_raw = body["classes"]
    if len(classes_raw) > 4094:
        builder.issue((*path, "classes"), "too many classes", "at most 4094")
        return None
    for index, (name, raw) in enumerate(classes_raw.items()):
        cpath: Path = (*path, "classes", name)
        minor = (index + 1) * 0x10
        minors[name] = minor
        if not isinstance(raw, dict) or not isinstance(raw.get("share"), str):
            continue  # the schema reports it
        try:
            rate, percent = _parse_share(raw["share"], total)
        except ValueError as exc:
            builder.issue((*cpath, "share"), str(exc), SHARE_EXPECTED)
            continue
        if rate < 1 and known:
            builder.issue((*cpath, "share"), f"share {raw['share']!r} is no rate at all",
                          "more than 0 bytes per second of the htb rate")
            continue
        shares += percent
        ceil = total
        if isinstance(raw.get("ceil"), str):
            try:
                ceil, ceil_percent = _parse_share(raw["ceil"], total)
            except ValueError as exc:
                builder.issue((*cpath, "ceil"), str(exc), SHARE_EXPECTED)
                continue
            if ceil < rate and known:
                builder.issue((*cpath, "ceil"), f"ceil {raw['ceil']!r} is below the share "
                              f"{raw['share']!r}", "a ceil at least the class's share")
            if ceil_percent > 100.0 + 1e-9 and known:
                builder.issue((*cpath, "ceil"), f"ceil {raw['ceil']!r} is above the htb rate",
                              "at most 100% (the htb rate)")
        burst = (_size(builder, (*cpath, "burst"), raw["burst"]) if "burst" in raw
                 else _default_burst(rate))
        cburst = (_size(builder, (*cpath, "cburst"), raw["cburst"]) if "cburst" in raw
                  else _default_burst(ceil))
        quantum = (_size(builder, (*cpath, "quantum"), raw["quantum"]) if "quantum" in raw
                   else _default_quantum(rate, r2q))
        prio = raw.get("priority", 0)
        classes.append({"minor": minor, "parent": 1, "name": name, "rate": rate, "ceil": ceil,
                        "burst": burst, "cburst": cburst, "prio": prio, "quantum": quantum})
        dscps = raw.get("dscp") or []
        if isinstance(dscps, list):
            for i, item in enumerate(dscps):
                try:
                    dscp = parse_dscp(item)
                except ValueError as exc:
                    builder.issue((*cpath, "dscp", i), str(exc), "a DSCP name (ef, af41, cs5, "
                                  "le...) or a number from 0 to 63",
                                  _did_you_mean(item, DSCP_NAMES))
                    continue
                if dscp in dscp_owner:
                    builder.issue((*cpath, "dscp", i), f"DSCP {item} is already given to class "
                                  f"'{dscp_owner[dscp]}'", "each DSCP value in one class")
                    continue
                dscp_owner[dscp] = name
                dscp_filters.append((dscp, minor))
    if shares > 100.0 + 1e-9 and known:
        builder.issue((*path, "classes"), f"the class shares add up to {shares:g}% of the htb "
                      "rate", "shares that add up to at most 100%", key=True)
    default = body.get("default")
    if default not in minors:
        builder.issue((*path, "default"), f"no class '{default}' to send unclassified traffic "
                      "to", "one of the classes: " + ", ".join(minors),
                      _did_you_mean(default, minors))
        known = False
    filters = _htb_filters(builder, body.get("filters"), minors, (*path, "filters"))
    if not known:
        return None
    prio = max((f["prio"] for f in filters), default=0)
    for protocol in ("ip", "ipv6"):
        if dscp_filters:
            prio += 1
        for dscp, minor in dscp_filters:
            filters.append({"prio": prio, "protocol": protocol, "match": {"dscp": dscp},
                            "flowid": minor})
    return {"kind": "htb", "options": {"default": minors[default], "r2q": r2q},
            "classes": classes, "filters": filters}


def _did_you_mean(word: Any, candidates: Iterable[str]) -> str | None:
    from nodenetd.config.validate import did_you_mean  # validate imports this module

    return did_you_mean(word, candidates)


def _htb_filters(builder: _Builder, raw: Any, minors: dict[str, int], path: Path
                 ) -> list[dict[str, Any]]:
    filters: list[dict[str, Any]] = []
    if not isinstance(raw, list):
        return filters
    prio = 0
    for index, item in enumerate(raw):
        fpath: Path = (*path, index)
        if not isinstance(item, dict) or not isinstance(item.get("match"), dict):
            continue
        target = item.get("class")
        built = _filter_match(builder, item["match"], (*fpath, "match"))
        if target not in minors:
            builder.issue((*fpath, "class"), f"no class '{target}'",
                          "one of the classes: " + ", ".join(minors),
                          _did_you_mean(target, minors))
            continue
        if built is None:
            continue
        match, mark, families = built
        for protocol in families:
            prio += 1
            entry: dict[str, Any] = {"prio": prio, "protocol": protocol, "match": match,
                                     "flowid": minors[target]}
            if mark is not None:
                entry["mark"] = mark
            filters.append(entry)
    return filters


def _filter_match(builder: _Builder, raw: dict, path: Path
                  ) -> tuple[dict[str, int], list[int] | None, list[str]] | None:
    match: dict[str, int] = {}
    ok = True
    if "protocol" in raw:
        proto = raw["protocol"]
        if isinstance(proto, str) and proto.lower() in IP_PROTOCOLS:
            match["ipproto"] = IP_PROTOCOLS[proto.lower()]
        elif isinstance(proto, int) and not isinstance(proto, bool) and 0 <= proto <= 255:
            match["ipproto"] = proto
        else:
            builder.issue((*path, "protocol"), f"unknown protocol {proto!r}",
                          "tcp, udp, sctp, icmp, icmpv6 or a number from 0 to 255",
                          _did_you_mean(proto, IP_PROTOCOLS))
            ok = False
    for port in ("sport", "dport"):
        if port in raw:
            value = raw[port]
            if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
                match[port] = value
            else:
                ok = False
    if ("sport" in match or "dport" in match) and match.get("ipproto") not in _PORT_PROTOCOLS:
        builder.issue(path, "a port match needs the protocol it is a port of",
                      "protocol: tcp, udp or sctp next to sport/dport", key=False)
        ok = False
    if "dscp" in raw:
        try:
            match["dscp"] = parse_dscp(raw["dscp"])
        except ValueError as exc:
            builder.issue((*path, "dscp"), str(exc), "a DSCP name or a number from 0 to 63",
                          _did_you_mean(raw["dscp"], DSCP_NAMES))
            ok = False
    mark = None
    if "mark" in raw:
        mark = _parse_mark(builder, raw["mark"], (*path, "mark"))
        ok = ok and mark is not None
    family = raw.get("family")
    families = {"ipv4": ["ip"], "ipv6": ["ipv6"]}.get(family, ["ip", "ipv6"])
    if match.get("ipproto") == 1:
        families = [f for f in families if f == "ip"]
    elif match.get("ipproto") == 58:
        families = [f for f in families if f == "ipv6"]
    if not match and mark is not None and family is None:
        families = ["all"]  # a mark alone: every packet, whatever its protocol
    if not match and mark is None and ok:
        builder.issue(path, "a filter that matches everything", "at least one of protocol, "
                      "sport, dport, dscp, mark (unclassified traffic goes to the default "
                      "class anyway)")
        ok = False
    if not families and ok:
        builder.issue((*path, "family"), f"protocol {raw.get('protocol')!r} does not exist in "
                      f"{family}", "a family the protocol belongs to")
        ok = False
    return (match, mark, families) if ok else None


def _parse_mark(builder: _Builder, value: Any, path: Path) -> list[int] | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFFFFFF:
        return [value, 0xFFFFFFFF]
    found = _MARK.match(value) if isinstance(value, str) else None
    if found:
        val = int(found.group(1), 0)
        mask = int(found.group(2), 0) if found.group(2) else 0xFFFFFFFF
        if val <= 0xFFFFFFFF and mask <= 0xFFFFFFFF and mask:
            return [val & mask, mask]
    builder.issue(path, f"invalid firewall mark {value!r}",
                  "a number, or VALUE/MASK such as 0x10/0xff")
    return None


def _build_ingress(builder: _Builder, raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("police"), dict):
        return None
    police = raw["police"]
    path: Path = ("police",)
    if "rate" not in police or "burst" not in police:
        return None
    rate = _rate(builder, (*path, "rate"), police["rate"])
    burst = _size(builder, (*path, "burst"), police["burst"])
    out: dict[str, Any] = {"rate": rate, "burst": burst, "mtu": UNLIMITED}
    if "mtu" in police:
        out["mtu"] = _size(builder, (*path, "mtu"), police["mtu"])
    if None in out.values():
        return None
    if burst is not None and burst < 1514:
        builder.issue((*path, "burst"), f"burst {police['burst']!r} is smaller than one "
                      "full-size packet", "at least 1514 bytes; with GRO, at least 64kb (a "
                      "packet larger than the burst is always dropped)")
        return None
    return {"kind": "ingress", "police": out}


# --------------------------------------------------------------------------------------------
# Entry points


def check_qdisc(raw: Any) -> list[QosIssue]:
    """Every semantic issue of a rule's ``qdisc:`` value (paths relative to it)."""
    builder = _Builder()
    _build_qdisc(builder, raw)
    return builder.issues


def check_ingress(raw: Any) -> list[QosIssue]:
    builder = _Builder()
    _build_ingress(builder, raw)
    return builder.issues


def build_qdisc(raw: Any) -> dict[str, Any]:
    """The desired root qdisc of a validated ``qdisc:`` value."""
    builder = _Builder()
    value = _build_qdisc(builder, raw)
    if builder.issues or value is None:
        raise builder.issues[0] if builder.issues else QosIssue((), "invalid qdisc")
    return value


def build_ingress(raw: Any) -> dict[str, Any]:
    builder = _Builder()
    value = _build_ingress(builder, raw)
    if builder.issues or value is None:
        raise builder.issues[0] if builder.issues else QosIssue((), "invalid ingress")
    return value
