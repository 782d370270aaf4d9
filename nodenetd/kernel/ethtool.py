"""ethtool over generic netlink: offload features, channels, rings and interrupt coalescing.

One ``EthtoolNetlink`` holds one netlink socket in the network namespace of the thread that
opened it, resolves the ``ethtool`` family once, and reads every device of a kind with a single
dump request (one request, all devices). Feature bitsets are requested in compact form and the
feature names come once per socket from the global ``ETH_SS_FEATURES`` string set, so a
dump of 1000 devices is one request and plain integer bit arithmetic.

Message layouts are pyroute2 ``genlmsg``/``nla`` subclasses with the attribute numbers of
``include/uapi/linux/ethtool_netlink_generated.h`` written out. Decoding is separate from the
socket: ``decode_messages`` turns raw reply bytes into messages and the ``parse_*`` functions
turn one message into plain values, so recorded replies can be tested without a kernel.

Why not pyroute2's ``GenericNetlinkSocket`` for the I/O: its synchronous wrapper (0.9.7) runs a
private asyncio loop (``RuntimeError`` when called from a thread that runs a loop), keeps one
socket per thread (a second thread silently gets a new, unbound socket), treats the error a dump
carries in ``NLMSG_DONE`` as a normal end of dump, stops reading after a set reply and leaves
the following ACK behind, and decodes extended-ack attributes at the wrong offset. This module
therefore owns a plain ``AF_NETLINK`` socket and uses pyroute2 for what it does well: encoding
and decoding messages, including the family lookup (``ctrlmsg``).

Errors are nodenetd's typed errors: EOPNOTSUPP, ENOTSUPP and EBUSY are ``Unsupported``, ENODEV
is ``Gone``, anything else is ``Refused``; the reason carries the errno name and the kernel's
extended-ack message. Calls block (microseconds to milliseconds); the daemon runs them in a
worker thread. An instance may be shared between threads; requests are serialised.
"""

from __future__ import annotations

import errno
import itertools
import logging
import socket
import struct
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from pyroute2.netlink import (
    CTRL_CMD_GETFAMILY,
    GENL_ID_CTRL,
    NLA_F_NESTED,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    ctrlmsg,
    genlmsg,
    nla,
)

from nodenetd.config.vocabulary import CHANNEL_KEYS, COALESCE_BOOL_KEYS, COALESCE_KEYS, RING_KEYS
from nodenetd.errors import Gone, KernelError, Refused, Unsupported

__all__ = [
    "EthtoolNetlink",
    "FeatureState",
    "Limits",
    "decode_messages",
    "encode_bitset",
    "parse_coalesce",
    "parse_feature_names",
    "parse_features",
    "parse_limits",
    "reply_ifindex",
]

log = logging.getLogger(__name__)

ETHTOOL_GENL_NAME = "ethtool"
ETHTOOL_GENL_VERSION = 1

# enum ethtool_msg_user_*: commands we send
ETHTOOL_MSG_STRSET_GET = 1
ETHTOOL_MSG_FEATURES_GET = 11
ETHTOOL_MSG_FEATURES_SET = 12
ETHTOOL_MSG_RINGS_GET = 15
ETHTOOL_MSG_RINGS_SET = 16
ETHTOOL_MSG_CHANNELS_GET = 17
ETHTOOL_MSG_CHANNELS_SET = 18
ETHTOOL_MSG_COALESCE_GET = 19
ETHTOOL_MSG_COALESCE_SET = 20

# enum ethtool_msg_kernel_*: what the kernel answers with
ETHTOOL_MSG_STRSET_GET_REPLY = 1
ETHTOOL_MSG_FEATURES_GET_REPLY = 11
ETHTOOL_MSG_FEATURES_SET_REPLY = 12
ETHTOOL_MSG_RINGS_GET_REPLY = 16
ETHTOOL_MSG_CHANNELS_GET_REPLY = 18
ETHTOOL_MSG_COALESCE_GET_REPLY = 20

ETHTOOL_FLAG_COMPACT_BITSETS = 1
ETHTOOL_FLAG_OMIT_REPLY = 2

ETH_SS_FEATURES = 4  # enum ethtool_stringset

ENOTSUPP = 524  # kernel-internal "operation not supported", leaks out of some drivers
_UNSUPPORTED_ERRNOS = frozenset({errno.EOPNOTSUPP, ENOTSUPP, errno.EBUSY})

# netlink socket options and ack flags (linux/netlink.h)
_SOL_NETLINK = 270
_NETLINK_CAP_ACK = 10
_NETLINK_EXT_ACK = 11
_NLM_F_CAPPED = 0x100
_NLM_F_ACK_TLVS = 0x200
_NLMSGERR_ATTR_MSG = 1

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid
_RECV_BUFSIZE = 1 << 16  # a dump skb is at most 32 KiB


# --------------------------------------------------------------------------------------------
# Message layouts (pyroute2 classes, attribute numbers from the uapi header)


class ethtool_header(nla):
    nla_flags = NLA_F_NESTED
    nla_map = (
        (0, "ETHTOOL_A_HEADER_UNSPEC", "none"),
        (1, "ETHTOOL_A_HEADER_DEV_INDEX", "uint32"),
        (2, "ETHTOOL_A_HEADER_DEV_NAME", "asciiz"),
        (3, "ETHTOOL_A_HEADER_FLAGS", "uint32"),
        (4, "ETHTOOL_A_HEADER_PHY_INDEX", "uint32"),
    )


class ethtool_bitset(nla):
    """A bitset; we only ask for and send the compact form (SIZE + VALUE [+ MASK] u32 arrays)."""

    nla_flags = NLA_F_NESTED
    nla_map = (
        (0, "ETHTOOL_A_BITSET_UNSPEC", "none"),
        (1, "ETHTOOL_A_BITSET_NOMASK", "flag"),
        (2, "ETHTOOL_A_BITSET_SIZE", "uint32"),
        (3, "ETHTOOL_A_BITSET_BITS", "none"),  # verbose form, never requested
        (4, "ETHTOOL_A_BITSET_VALUE", "array(uint32)"),
        (5, "ETHTOOL_A_BITSET_MASK", "array(uint32)"),
    )


class _ethtool_msg(genlmsg):
    """Base of the ethtool messages: every one starts with the common header at attribute 1."""

    ethtool_header = ethtool_header


class ethtool_strset_msg(_ethtool_msg):
    nla_map = (
        (0, "ETHTOOL_A_STRSET_UNSPEC", "none"),
        (1, "ETHTOOL_A_STRSET_HEADER", "ethtool_header"),
        (2, "ETHTOOL_A_STRSET_STRINGSETS", "stringsets"),
        (3, "ETHTOOL_A_STRSET_COUNTS_ONLY", "flag"),
    )

    class stringsets(nla):
        nla_flags = NLA_F_NESTED
        nla_map = (
            (0, "ETHTOOL_A_STRINGSETS_UNSPEC", "none"),
            (1, "ETHTOOL_A_STRINGSETS_STRINGSET", "stringset"),
        )

        class stringset(nla):
            nla_flags = NLA_F_NESTED
            nla_map = (
                (0, "ETHTOOL_A_STRINGSET_UNSPEC", "none"),
                (1, "ETHTOOL_A_STRINGSET_ID", "uint32"),
                (2, "ETHTOOL_A_STRINGSET_COUNT", "uint32"),
                (3, "ETHTOOL_A_STRINGSET_STRINGS", "strings"),
            )

            class strings(nla):
                nla_flags = NLA_F_NESTED
                nla_map = (
                    (0, "ETHTOOL_A_STRINGS_UNSPEC", "none"),
                    (1, "ETHTOOL_A_STRINGS_STRING", "string_entry"),
                )

                class string_entry(nla):
                    nla_flags = NLA_F_NESTED
                    nla_map = (
                        (0, "ETHTOOL_A_STRING_UNSPEC", "none"),
                        (1, "ETHTOOL_A_STRING_INDEX", "uint32"),
                        (2, "ETHTOOL_A_STRING_VALUE", "asciiz"),
                    )


class ethtool_features_msg(_ethtool_msg):
    nla_map = (
        (0, "ETHTOOL_A_FEATURES_UNSPEC", "none"),
        (1, "ETHTOOL_A_FEATURES_HEADER", "ethtool_header"),
        (2, "ETHTOOL_A_FEATURES_HW", "ethtool_bitset"),
        (3, "ETHTOOL_A_FEATURES_WANTED", "ethtool_bitset"),
        (4, "ETHTOOL_A_FEATURES_ACTIVE", "ethtool_bitset"),
        (5, "ETHTOOL_A_FEATURES_NOCHANGE", "ethtool_bitset"),
    )
    ethtool_bitset = ethtool_bitset


class ethtool_channels_msg(_ethtool_msg):
    nla_map = (
        (0, "ETHTOOL_A_CHANNELS_UNSPEC", "none"),
        (1, "ETHTOOL_A_CHANNELS_HEADER", "ethtool_header"),
        (2, "ETHTOOL_A_CHANNELS_RX_MAX", "uint32"),
        (3, "ETHTOOL_A_CHANNELS_TX_MAX", "uint32"),
        (4, "ETHTOOL_A_CHANNELS_OTHER_MAX", "uint32"),
        (5, "ETHTOOL_A_CHANNELS_COMBINED_MAX", "uint32"),
        (6, "ETHTOOL_A_CHANNELS_RX_COUNT", "uint32"),
        (7, "ETHTOOL_A_CHANNELS_TX_COUNT", "uint32"),
        (8, "ETHTOOL_A_CHANNELS_OTHER_COUNT", "uint32"),
        (9, "ETHTOOL_A_CHANNELS_COMBINED_COUNT", "uint32"),
    )
    # vocabulary key -> (current attribute, maximum attribute)
    limit_attrs: Mapping[str, tuple[str, str | None]] = MappingProxyType(
        {
            "rx": ("ETHTOOL_A_CHANNELS_RX_COUNT", "ETHTOOL_A_CHANNELS_RX_MAX"),
            "tx": ("ETHTOOL_A_CHANNELS_TX_COUNT", "ETHTOOL_A_CHANNELS_TX_MAX"),
            "other": ("ETHTOOL_A_CHANNELS_OTHER_COUNT", "ETHTOOL_A_CHANNELS_OTHER_MAX"),
            "combined": ("ETHTOOL_A_CHANNELS_COMBINED_COUNT", "ETHTOOL_A_CHANNELS_COMBINED_MAX"),
        }
    )


class ethtool_rings_msg(_ethtool_msg):
    nla_map = (
        (0, "ETHTOOL_A_RINGS_UNSPEC", "none"),
        (1, "ETHTOOL_A_RINGS_HEADER", "ethtool_header"),
        (2, "ETHTOOL_A_RINGS_RX_MAX", "uint32"),
        (3, "ETHTOOL_A_RINGS_RX_MINI_MAX", "uint32"),
        (4, "ETHTOOL_A_RINGS_RX_JUMBO_MAX", "uint32"),
        (5, "ETHTOOL_A_RINGS_TX_MAX", "uint32"),
        (6, "ETHTOOL_A_RINGS_RX", "uint32"),
        (7, "ETHTOOL_A_RINGS_RX_MINI", "uint32"),
        (8, "ETHTOOL_A_RINGS_RX_JUMBO", "uint32"),
        (9, "ETHTOOL_A_RINGS_TX", "uint32"),
        (10, "ETHTOOL_A_RINGS_RX_BUF_LEN", "uint32"),
        (11, "ETHTOOL_A_RINGS_TCP_DATA_SPLIT", "uint8"),
        (12, "ETHTOOL_A_RINGS_CQE_SIZE", "uint32"),
        (13, "ETHTOOL_A_RINGS_TX_PUSH", "uint8"),
        (14, "ETHTOOL_A_RINGS_RX_PUSH", "uint8"),
        (15, "ETHTOOL_A_RINGS_TX_PUSH_BUF_LEN", "uint32"),
        (16, "ETHTOOL_A_RINGS_TX_PUSH_BUF_LEN_MAX", "uint32"),
        (17, "ETHTOOL_A_RINGS_HDS_THRESH", "uint32"),
        (18, "ETHTOOL_A_RINGS_HDS_THRESH_MAX", "uint32"),
    )
    limit_attrs: Mapping[str, tuple[str, str | None]] = MappingProxyType(
        {
            "rx": ("ETHTOOL_A_RINGS_RX", "ETHTOOL_A_RINGS_RX_MAX"),
            "rx-mini": ("ETHTOOL_A_RINGS_RX_MINI", "ETHTOOL_A_RINGS_RX_MINI_MAX"),
            "rx-jumbo": ("ETHTOOL_A_RINGS_RX_JUMBO", "ETHTOOL_A_RINGS_RX_JUMBO_MAX"),
            "tx": ("ETHTOOL_A_RINGS_TX", "ETHTOOL_A_RINGS_TX_MAX"),
            "rx-buf-len": ("ETHTOOL_A_RINGS_RX_BUF_LEN", None),
            "cqe-size": ("ETHTOOL_A_RINGS_CQE_SIZE", None),
        }
    )


class ethtool_coalesce_msg(_ethtool_msg):
    nla_map = (
        (0, "ETHTOOL_A_COALESCE_UNSPEC", "none"),
        (1, "ETHTOOL_A_COALESCE_HEADER", "ethtool_header"),
        (2, "ETHTOOL_A_COALESCE_RX_USECS", "uint32"),
        (3, "ETHTOOL_A_COALESCE_RX_MAX_FRAMES", "uint32"),
        (4, "ETHTOOL_A_COALESCE_RX_USECS_IRQ", "uint32"),
        (5, "ETHTOOL_A_COALESCE_RX_MAX_FRAMES_IRQ", "uint32"),
        (6, "ETHTOOL_A_COALESCE_TX_USECS", "uint32"),
        (7, "ETHTOOL_A_COALESCE_TX_MAX_FRAMES", "uint32"),
        (8, "ETHTOOL_A_COALESCE_TX_USECS_IRQ", "uint32"),
        (9, "ETHTOOL_A_COALESCE_TX_MAX_FRAMES_IRQ", "uint32"),
        (10, "ETHTOOL_A_COALESCE_STATS_BLOCK_USECS", "uint32"),
        (11, "ETHTOOL_A_COALESCE_USE_ADAPTIVE_RX", "uint8"),
        (12, "ETHTOOL_A_COALESCE_USE_ADAPTIVE_TX", "uint8"),
        (13, "ETHTOOL_A_COALESCE_PKT_RATE_LOW", "uint32"),
        (14, "ETHTOOL_A_COALESCE_RX_USECS_LOW", "uint32"),
        (15, "ETHTOOL_A_COALESCE_RX_MAX_FRAMES_LOW", "uint32"),
        (16, "ETHTOOL_A_COALESCE_TX_USECS_LOW", "uint32"),
        (17, "ETHTOOL_A_COALESCE_TX_MAX_FRAMES_LOW", "uint32"),
        (18, "ETHTOOL_A_COALESCE_PKT_RATE_HIGH", "uint32"),
        (19, "ETHTOOL_A_COALESCE_RX_USECS_HIGH", "uint32"),
        (20, "ETHTOOL_A_COALESCE_RX_MAX_FRAMES_HIGH", "uint32"),
        (21, "ETHTOOL_A_COALESCE_TX_USECS_HIGH", "uint32"),
        (22, "ETHTOOL_A_COALESCE_TX_MAX_FRAMES_HIGH", "uint32"),
        (23, "ETHTOOL_A_COALESCE_RATE_SAMPLE_INTERVAL", "uint32"),
        (24, "ETHTOOL_A_COALESCE_USE_CQE_MODE_TX", "uint8"),
        (25, "ETHTOOL_A_COALESCE_USE_CQE_MODE_RX", "uint8"),
        (26, "ETHTOOL_A_COALESCE_TX_AGGR_MAX_BYTES", "uint32"),
        (27, "ETHTOOL_A_COALESCE_TX_AGGR_MAX_FRAMES", "uint32"),
        (28, "ETHTOOL_A_COALESCE_TX_AGGR_TIME_USECS", "uint32"),
        (29, "ETHTOOL_A_COALESCE_RX_PROFILE", "none"),  # DIM profiles: not managed
        (30, "ETHTOOL_A_COALESCE_TX_PROFILE", "none"),
    )
    # vocabulary key -> attribute; COALESCE_BOOL_KEYS are u8 on the wire, the rest u32
    key_attrs: Mapping[str, str] = MappingProxyType(
        {
            "rx-usecs": "ETHTOOL_A_COALESCE_RX_USECS",
            "rx-frames": "ETHTOOL_A_COALESCE_RX_MAX_FRAMES",
            "rx-usecs-irq": "ETHTOOL_A_COALESCE_RX_USECS_IRQ",
            "rx-frames-irq": "ETHTOOL_A_COALESCE_RX_MAX_FRAMES_IRQ",
            "tx-usecs": "ETHTOOL_A_COALESCE_TX_USECS",
            "tx-frames": "ETHTOOL_A_COALESCE_TX_MAX_FRAMES",
            "tx-usecs-irq": "ETHTOOL_A_COALESCE_TX_USECS_IRQ",
            "tx-frames-irq": "ETHTOOL_A_COALESCE_TX_MAX_FRAMES_IRQ",
            "stats-block-usecs": "ETHTOOL_A_COALESCE_STATS_BLOCK_USECS",
            "adaptive-rx": "ETHTOOL_A_COALESCE_USE_ADAPTIVE_RX",
            "adaptive-tx": "ETHTOOL_A_COALESCE_USE_ADAPTIVE_TX",
            "pkt-rate-low": "ETHTOOL_A_COALESCE_PKT_RATE_LOW",
            "rx-usecs-low": "ETHTOOL_A_COALESCE_RX_USECS_LOW",
            "rx-frames-low": "ETHTOOL_A_COALESCE_RX_MAX_FRAMES_LOW",
            "tx-usecs-low": "ETHTOOL_A_COALESCE_TX_USECS_LOW",
            "tx-frames-low": "ETHTOOL_A_COALESCE_TX_MAX_FRAMES_LOW",
            "pkt-rate-high": "ETHTOOL_A_COALESCE_PKT_RATE_HIGH",
            "rx-usecs-high": "ETHTOOL_A_COALESCE_RX_USECS_HIGH",
            "rx-frames-high": "ETHTOOL_A_COALESCE_RX_MAX_FRAMES_HIGH",
            "tx-usecs-high": "ETHTOOL_A_COALESCE_TX_USECS_HIGH",
            "tx-frames-high": "ETHTOOL_A_COALESCE_TX_MAX_FRAMES_HIGH",
            "sample-interval": "ETHTOOL_A_COALESCE_RATE_SAMPLE_INTERVAL",
            "cqe-mode-tx": "ETHTOOL_A_COALESCE_USE_CQE_MODE_TX",
            "cqe-mode-rx": "ETHTOOL_A_COALESCE_USE_CQE_MODE_RX",
            "tx-aggr-max-bytes": "ETHTOOL_A_COALESCE_TX_AGGR_MAX_BYTES",
            "tx-aggr-max-frames": "ETHTOOL_A_COALESCE_TX_AGGR_MAX_FRAMES",
            "tx-aggr-time-usecs": "ETHTOOL_A_COALESCE_TX_AGGR_TIME_USECS",
        }
    )


assert set(ethtool_coalesce_msg.key_attrs) == set(COALESCE_KEYS)
assert set(ethtool_channels_msg.limit_attrs) == set(CHANNEL_KEYS)
assert set(ethtool_rings_msg.limit_attrs) == set(RING_KEYS)


# --------------------------------------------------------------------------------------------
# Typed results


@dataclass(frozen=True)
class FeatureState:
    """Offload features of one device, by kernel feature name (``netdev_features_strings``)."""

    active: frozenset[str]  # currently on
    changeable: frozenset[str]  # in the hw mask and not in NOCHANGE; the rest are "[fixed]"
    known: frozenset[str]  # every name the kernel reports for the device

    def is_on(self, name: str) -> bool:
        return name in self.active

    def is_fixed(self, name: str) -> bool:
        """True for features ``ethtool -k`` marks ``[fixed]`` (and for names it does not know)."""
        return name not in self.changeable


@dataclass(frozen=True)
class Limits:
    """Channels or rings: the current value and, where the kernel has one, the maximum per key."""

    current: Mapping[str, int]  # vocabulary keys the device reports
    maximum: Mapping[str, int]  # rx-buf-len and cqe-size have no maximum


# --------------------------------------------------------------------------------------------
# Pure decoding: bytes -> messages -> values


def decode_messages(data: bytes, msg_class: type[genlmsg]) -> list[genlmsg]:
    """Decode the genetlink messages in ``data`` (one datagram or several concatenated).

    ``NLMSG_DONE`` and ACK messages end or separate replies and are skipped; an error
    message raises ``ValueError`` (use ``EthtoolNetlink`` to get typed kernel errors).
    """
    messages = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            raise ValueError(f"truncated netlink message at offset {offset}")
        if mtype == NLMSG_ERROR or mtype == NLMSG_DONE:
            (code,) = struct.unpack_from("=i", data, offset + 16) if length >= 20 else (0,)
            if code:
                raise ValueError(f"netlink error {errno.errorcode.get(-code, -code)}")
        else:
            msg = msg_class(data, offset=offset)
            msg.decode()
            messages.append(msg)
        offset += (length + 3) & ~3
    return messages


def reply_ifindex(msg: genlmsg) -> int:
    """The device a reply is about, from its common header."""
    header = msg.get_attr(msg.nla_map[1][1])
    if header is None:
        raise ValueError("ethtool reply without a header")
    return header.get_attr("ETHTOOL_A_HEADER_DEV_INDEX")


def reply_ifname(msg: genlmsg) -> str | None:
    header = msg.get_attr(msg.nla_map[1][1])
    return None if header is None else header.get_attr("ETHTOOL_A_HEADER_DEV_NAME")


def bitset_value(bitset: nla | None) -> tuple[int, int | None]:
    """(value, mask) of a compact bitset as Python ints, bit N = feature N; mask None if absent.

    The u32 words are in host order and word 0 holds bits 0..31.
    """
    if bitset is None:
        return 0, None
    value = _words_to_int(bitset.get_attr("ETHTOOL_A_BITSET_VALUE"))
    mask = bitset.get_attr("ETHTOOL_A_BITSET_MASK")
    return value, (None if mask is None else _words_to_int(mask))


def _words_to_int(words: Sequence[int] | None) -> int:
    result = 0
    for i, word in enumerate(words or ()):
        result |= word << (32 * i)
    return result


def encode_bitset(size: int, value: int, mask: int | None) -> dict:
    """The compact-bitset nest pyroute2 encodes: SIZE, VALUE and (unless None) MASK words."""
    nwords = (size + 31) // 32
    attrs: list = [("ETHTOOL_A_BITSET_SIZE", size)]
    attrs.append(("ETHTOOL_A_BITSET_VALUE", _int_to_words(value, nwords)))
    if mask is None:
        attrs.insert(0, ("ETHTOOL_A_BITSET_NOMASK", True))
    else:
        attrs.append(("ETHTOOL_A_BITSET_MASK", _int_to_words(mask, nwords)))
    return {"attrs": attrs}


def _int_to_words(value: int, nwords: int) -> tuple[int, ...]:
    return tuple((value >> (32 * i)) & 0xFFFFFFFF for i in range(nwords))


def _bit_names(bits: int, names: Sequence[str]) -> set[str]:
    result = set()
    index = 0
    while bits:
        if bits & 1:
            result.add(names[index] if index < len(names) else f"feature-bit-{index}")
        bits >>= 1
        index += 1
    return result


def parse_feature_names(msg: genlmsg) -> tuple[str, ...]:
    """Feature names by bit index from an ``ETH_SS_FEATURES`` string-set reply."""
    sets = msg.get_attr("ETHTOOL_A_STRSET_STRINGSETS")
    for stringset in sets.get_attrs("ETHTOOL_A_STRINGSETS_STRINGSET") if sets else ():
        if stringset.get_attr("ETHTOOL_A_STRINGSET_ID") != ETH_SS_FEATURES:
            continue
        count = stringset.get_attr("ETHTOOL_A_STRINGSET_COUNT") or 0
        names = [f"feature-bit-{i}" for i in range(count)]
        strings = stringset.get_attr("ETHTOOL_A_STRINGSET_STRINGS")
        for entry in strings.get_attrs("ETHTOOL_A_STRINGS_STRING") if strings else ():
            index = entry.get_attr("ETHTOOL_A_STRING_INDEX")
            value = entry.get_attr("ETHTOOL_A_STRING_VALUE")
            if index is None or value is None:
                continue
            if index >= len(names):
                names.extend(f"feature-bit-{i}" for i in range(len(names), index + 1))
            names[index] = value
        return tuple(names)
    raise ValueError("string-set reply without ETH_SS_FEATURES")


def parse_features(msg: genlmsg, names: Sequence[str]) -> FeatureState:
    """A FEATURES_GET reply (compact bitsets) as a FeatureState; ``names`` indexes the bits."""
    hw, _ = bitset_value(msg.get_attr("ETHTOOL_A_FEATURES_HW"))
    wanted, _ = bitset_value(msg.get_attr("ETHTOOL_A_FEATURES_WANTED"))
    active, _ = bitset_value(msg.get_attr("ETHTOOL_A_FEATURES_ACTIVE"))
    nochange, _ = bitset_value(msg.get_attr("ETHTOOL_A_FEATURES_NOCHANGE"))
    return FeatureState(
        active=frozenset(_bit_names(active, names)),
        changeable=frozenset(_bit_names(hw & ~nochange, names)),
        known=frozenset(names).union(_bit_names(hw | wanted | active | nochange, names)),
    )


def parse_limits(msg: ethtool_channels_msg | ethtool_rings_msg) -> Limits:
    """A CHANNELS_GET or RINGS_GET reply as Limits, with only the keys the device reports.

    The kernel leaves out a channel or ring kind whose maximum is 0 (``n/a`` in ethtool).
    """
    current: dict[str, int] = {}
    maximum: dict[str, int] = {}
    for key, (current_attr, max_attr) in type(msg).limit_attrs.items():
        value = msg.get_attr(current_attr)
        if value is None:
            continue
        current[key] = value
        if max_attr is not None:
            top = msg.get_attr(max_attr)
            if top is not None:
                maximum[key] = top
    return Limits(current=MappingProxyType(current), maximum=MappingProxyType(maximum))


def parse_coalesce(msg: ethtool_coalesce_msg) -> dict[str, int | bool]:
    """A COALESCE_GET reply as {vocabulary key: value}; the kernel sends only supported keys."""
    result: dict[str, int | bool] = {}
    for key, attr in ethtool_coalesce_msg.key_attrs.items():
        value = msg.get_attr(attr)
        if value is not None:
            result[key] = bool(value) if key in COALESCE_BOOL_KEYS else value
    return result


# --------------------------------------------------------------------------------------------
# Errors


class NetlinkFailure(Exception):
    """The kernel answered a request with an error; ``partial`` holds replies received before."""

    def __init__(self, code: int, extack: str | None, partial: list[genlmsg]):
        self.code = code
        self.extack = extack
        self.partial = partial
        super().__init__(code, extack)

    def describe(self) -> str:
        name = errno.errorcode.get(self.code, "ENOTSUPP" if self.code == ENOTSUPP else "?")
        text = f"{name} ({self.code})"
        return f"{self.extack}: {text}" if self.extack else text


def kernel_error(failure: NetlinkFailure, target: str, setting: str) -> KernelError:
    """The typed nodenetd error for a kernel errno."""
    reason = failure.describe()
    if failure.code in _UNSUPPORTED_ERRNOS:
        return Unsupported(target, setting, reason, failure.code)
    if failure.code == errno.ENODEV:
        return Gone(target, setting, reason, failure.code)
    return Refused(target, setting, reason, failure.code)


def _parse_error(data: bytes, offset: int, length: int, flags: int, mtype: int):
    """(errno, extack message) of an NLMSG_ERROR or NLMSG_DONE message."""
    if length < 20:
        return 0, None
    (code,) = struct.unpack_from("=i", data, offset + 16)
    if not flags & _NLM_F_ACK_TLVS:
        return -code, None
    tlv = offset + 20
    if mtype == NLMSG_ERROR:
        # the request's header follows, and its payload too unless the ack is capped
        (orig_len,) = struct.unpack_from("=I", data, tlv)
        tlv += _NLMSGHDR.size if flags & _NLM_F_CAPPED else (orig_len + 3) & ~3
    end = offset + length
    message = None
    while tlv + 4 <= end:
        alen, atype = struct.unpack_from("=HH", data, tlv)
        if alen < 4:
            break
        if atype & 0x3FFF == _NLMSGERR_ATTR_MSG:
            message = bytes(data[tlv + 4 : tlv + alen]).rstrip(b"\0").decode(errors="replace")
        tlv += (alen + 3) & ~3
    return -code, message


# --------------------------------------------------------------------------------------------
# The socket


@dataclass(frozen=True)
class _Kind:
    setting: str
    get_cmd: int
    set_cmd: int
    msg_class: type[_ethtool_msg]
    header_attr: str


_FEATURES = _Kind(
    "features",
    ETHTOOL_MSG_FEATURES_GET,
    ETHTOOL_MSG_FEATURES_SET,
    ethtool_features_msg,
    "ETHTOOL_A_FEATURES_HEADER",
)
_CHANNELS = _Kind(
    "channels",
    ETHTOOL_MSG_CHANNELS_GET,
    ETHTOOL_MSG_CHANNELS_SET,
    ethtool_channels_msg,
    "ETHTOOL_A_CHANNELS_HEADER",
)
_RINGS = _Kind(
    "rings", ETHTOOL_MSG_RINGS_GET, ETHTOOL_MSG_RINGS_SET, ethtool_rings_msg, "ETHTOOL_A_RINGS_HEADER"
)
_COALESCE = _Kind(
    "coalesce",
    ETHTOOL_MSG_COALESCE_GET,
    ETHTOOL_MSG_COALESCE_SET,
    ethtool_coalesce_msg,
    "ETHTOOL_A_COALESCE_HEADER",
)


class EthtoolNetlink:
    """A genetlink socket for the ethtool family in the current network namespace.

    Use as a context manager, or call ``close()``. ``dump_*`` read every device of the
    namespace with one request; ``get_*`` read one device (the hotplug path); ``set_*`` change
    one device. Feature names come from the kernel once per socket.
    """

    def __init__(self, *, timeout: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._feature_names: tuple[str, ...] | None = None
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_GENERIC)
        try:
            self._sock.setsockopt(_SOL_NETLINK, _NETLINK_EXT_ACK, 1)
            self._sock.setsockopt(_SOL_NETLINK, _NETLINK_CAP_ACK, 1)
            self._sock.bind((0, 0))
            self._sock.settimeout(timeout)
            self._family = self._resolve_family()
        except BaseException:
            self._sock.close()
            raise

    # -- lifecycle

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> EthtoolNetlink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading

    def feature_names(self) -> tuple[str, ...]:
        """The kernel's feature names by bit (``ETH_SS_FEATURES``), fetched once per socket."""
        if self._feature_names is None:
            request = [
                ("ETHTOOL_A_STRSET_HEADER", {"attrs": []}),
                (
                    "ETHTOOL_A_STRSET_STRINGSETS",
                    {
                        "attrs": [
                            (
                                "ETHTOOL_A_STRINGSETS_STRINGSET",
                                {"attrs": [("ETHTOOL_A_STRINGSET_ID", ETH_SS_FEATURES)]},
                            )
                        ]
                    },
                ),
            ]
            try:
                (reply,) = self._request(ETHTOOL_MSG_STRSET_GET, ethtool_strset_msg, request)
            except NetlinkFailure as failure:
                raise kernel_error(failure, "kernel", "features") from None
            self._feature_names = parse_feature_names(reply)
        return self._feature_names

    def dump_features(self) -> dict[int, FeatureState]:
        names = self.feature_names()
        return {i: parse_features(m, names) for i, m in self._dump(_FEATURES).items()}

    def dump_channels(self) -> dict[int, Limits]:
        return self._dump_limits(_CHANNELS)

    def dump_rings(self) -> dict[int, Limits]:
        return self._dump_limits(_RINGS)

    def dump_coalesce(self) -> dict[int, dict[str, int | bool]]:
        result = {}
        for ifindex, msg in self._dump(_COALESCE).items():
            values = parse_coalesce(msg)
            if values:
                result[ifindex] = values
        return result

    def get_features(self, ifindex: int, ifname: str | None = None) -> FeatureState:
        names = self.feature_names()
        msg = self._get(_FEATURES, ifindex, ifname)
        if msg is None:
            raise Unsupported(ifname or f"ifindex {ifindex}", "features", "no feature reply")
        return parse_features(msg, names)

    def get_channels(self, ifindex: int, ifname: str | None = None) -> Limits | None:
        """Channel counts, or None when the device has no channel control."""
        return self._get_limits(_CHANNELS, ifindex, ifname)

    def get_rings(self, ifindex: int, ifname: str | None = None) -> Limits | None:
        """Ring sizes, or None when the device has no ring control."""
        return self._get_limits(_RINGS, ifindex, ifname)

    def get_coalesce(self, ifindex: int, ifname: str | None = None) -> dict[str, int | bool] | None:
        """Coalescing parameters the device supports, or None when it supports none."""
        msg = self._get(_COALESCE, ifindex, ifname)
        values = None if msg is None else parse_coalesce(msg)
        return values or None

    # -- writing

    def set_features(self, ifindex: int, ifname: str, wanted: Mapping[str, bool]) -> None:
        """Ask for features on/off. Only the named bits are sent (value and mask).

        Raises Unsupported for a name the kernel does not know and for a fixed feature whose
        requested state differs from its state; Refused when the kernel kept a changeable
        feature in another state (a dependency such as TSO needing scatter-gather). Setting a
        fixed feature to the state it is in is a no-op. Other requested bits may have changed
        when this raises; callers re-read to verify anyway.
        """
        if not wanted:
            return
        names = self.feature_names()
        index = {name: bit for bit, name in enumerate(names)}
        value = mask = 0
        for name, on in wanted.items():
            bit = index.get(name)
            if bit is None:
                raise Unsupported(
                    ifname, f"features.{name}", "the kernel has no feature of that name"
                )
            mask |= 1 << bit
            if on:
                value |= 1 << bit
        attrs = [
            ("ETHTOOL_A_FEATURES_HEADER", _header(ifindex)),
            ("ETHTOOL_A_FEATURES_WANTED", encode_bitset(len(names), value, mask)),
        ]
        setting = f"features.{next(iter(wanted))}" if len(wanted) == 1 else "features"
        try:
            replies = self._request(ETHTOOL_MSG_FEATURES_SET, ethtool_features_msg, attrs)
        except NetlinkFailure as failure:
            raise kernel_error(failure, ifname, setting) from None
        # The kernel replies only when the outcome differs from the request or active changed:
        # WANTED carries the requested values with a mask of the bits that did not take effect.
        missed = 0
        for reply in replies:
            _, diff = bitset_value(reply.get_attr("ETHTOOL_A_FEATURES_WANTED"))
            missed |= diff or 0
        if missed:
            self._explain_missed(ifindex, ifname, wanted, _bit_names(missed & mask, names))

    def _explain_missed(
        self, ifindex: int, ifname: str, wanted: Mapping[str, bool], missed: set[str]
    ) -> None:
        state = self.get_features(ifindex, ifname)
        fixed = sorted(name for name in missed if state.is_fixed(name))
        other = sorted(missed - set(fixed))

        def describe(names: list[str]) -> str:
            return ", ".join(
                f"{name} requested {_onoff(wanted[name])}, is {_onoff(state.is_on(name))}"
                for name in names
            )

        if fixed:
            raise Unsupported(
                ifname, f"features.{fixed[0]}", f"fixed by the driver: {describe(fixed)}"
            )
        raise Refused(
            ifname,
            f"features.{other[0]}",
            f"the kernel kept another state (a feature it depends on is off?): {describe(other)}",
        )

    def set_channels(self, ifindex: int, ifname: str, values: Mapping[str, int]) -> None:
        self._set_values(_CHANNELS, ifindex, ifname, values, ethtool_channels_msg.limit_attrs)

    def set_rings(self, ifindex: int, ifname: str, values: Mapping[str, int]) -> None:
        self._set_values(_RINGS, ifindex, ifname, values, ethtool_rings_msg.limit_attrs)

    def set_coalesce(self, ifindex: int, ifname: str, values: Mapping[str, int | bool]) -> None:
        attrs = {key: (attr, None) for key, attr in ethtool_coalesce_msg.key_attrs.items()}
        self._set_values(_COALESCE, ifindex, ifname, values, attrs)

    # -- internals

    def _dump_limits(self, kind: _Kind) -> dict[int, Limits]:
        result = {}
        for ifindex, msg in self._dump(kind).items():
            limits = parse_limits(msg)
            if limits.current:
                result[ifindex] = limits
        return result

    def _get_limits(self, kind: _Kind, ifindex: int, ifname: str | None) -> Limits | None:
        msg = self._get(kind, ifindex, ifname)
        limits = None if msg is None else parse_limits(msg)
        return limits if limits and limits.current else None

    def _dump(self, kind: _Kind) -> dict[int, genlmsg]:
        """Every device's reply by ifindex. Devices without support for the kind are absent.

        The kernel skips devices that answer EOPNOTSUPP; any other per-device error ends the
        dump there. Then the devices not yet seen are read one by one, and those that fail are
        left out with a log line.
        """
        try:
            messages = self._request(
                kind.get_cmd, kind.msg_class, [(kind.header_attr, _header())], dump=True
            )
        except NetlinkFailure as failure:
            messages = failure.partial
            log.warning(
                "ethtool %s dump stopped after %d device(s): %s; reading the rest one by one",
                kind.setting,
                len(messages),
                failure.describe(),
            )
            result = {reply_ifindex(msg): msg for msg in messages}
            for ifindex, ifname in self._interfaces():
                if ifindex in result:
                    continue
                try:
                    msg = self._get(kind, ifindex, ifname)
                except KernelError as exc:
                    log.warning("ethtool %s: leaving %s out: %s", kind.setting, ifname, exc)
                    continue
                if msg is not None:
                    result[ifindex] = msg
            return result
        return {reply_ifindex(msg): msg for msg in messages}

    def _interfaces(self) -> list[tuple[int, str]]:
        """Interfaces of the current namespace (for reading one by one after a failed dump)."""
        return socket.if_nameindex()

    def _get(self, kind: _Kind, ifindex: int, ifname: str | None) -> genlmsg | None:
        """One device's reply; None when the device does not support the kind."""
        try:
            replies = self._request(kind.get_cmd, kind.msg_class, [(kind.header_attr, _header(ifindex))])
        except NetlinkFailure as failure:
            error = kernel_error(failure, ifname or f"ifindex {ifindex}", kind.setting)
            if isinstance(error, Unsupported) and failure.code != errno.EBUSY:
                return None
            raise error from None
        return replies[0] if replies else None

    def _set_values(
        self,
        kind: _Kind,
        ifindex: int,
        ifname: str,
        values: Mapping[str, int | bool],
        key_attrs: Mapping[str, tuple[str, str | None]],
    ) -> None:
        if not values:
            return
        attrs: list = [(kind.header_attr, _header(ifindex, flags=ETHTOOL_FLAG_OMIT_REPLY))]
        for key, value in values.items():
            if key not in key_attrs:
                raise Unsupported(ifname, f"{kind.setting}.{key}", f"not a {kind.setting} key")
            if isinstance(value, bool) != (key in COALESCE_BOOL_KEYS):
                raise TypeError(f"{kind.setting}.{key}: {value!r} has the wrong type")
            attrs.append((key_attrs[key][0], int(value)))
        try:
            self._request(kind.set_cmd, kind.msg_class, attrs)
        except NetlinkFailure as failure:
            raise kernel_error(failure, ifname, kind.setting) from None

    def _resolve_family(self) -> int:
        msg = ctrlmsg()
        msg["cmd"] = CTRL_CMD_GETFAMILY
        msg["version"] = 1
        msg["attrs"] = [("CTRL_ATTR_FAMILY_NAME", ETHTOOL_GENL_NAME)]
        try:
            (reply,) = self._exchange(msg, GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, ctrlmsg)
        except NetlinkFailure as failure:
            raise Unsupported(
                "kernel", "ethtool", f"no ethtool netlink family: {failure.describe()}"
            ) from None
        return reply.get_attr("CTRL_ATTR_FAMILY_ID")

    def _request(
        self, cmd: int, msg_class: type[genlmsg], attrs: list, *, dump: bool = False
    ) -> list[genlmsg]:
        msg = msg_class()
        msg["cmd"] = cmd
        msg["version"] = ETHTOOL_GENL_VERSION
        msg["attrs"] = attrs
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        return self._exchange(msg, self._family, flags, msg_class)

    def _exchange(
        self, msg: genlmsg, msg_type: int, flags: int, msg_class: type[genlmsg]
    ) -> list[genlmsg]:
        """Send one request and collect its replies until the ACK (or NLMSG_DONE for a dump)."""
        with self._lock:
            seq = next(self._seq) & 0xFFFFFFFF
            msg["header"] = {"type": msg_type, "flags": flags, "sequence_number": seq, "pid": 0}
            msg.encode()
            self._sock.send(msg.data)
            replies: list[genlmsg] = []
            while True:
                data = self._recv()
                offset = 0
                while offset + _NLMSGHDR.size <= len(data):
                    length, mtype, mflags, mseq, _pid = _NLMSGHDR.unpack_from(data, offset)
                    if length < _NLMSGHDR.size:
                        raise OSError(errno.EPROTO, "malformed netlink message")
                    if mseq != seq:
                        pass  # a late answer to an earlier request that timed out
                    elif mtype == NLMSG_ERROR or mtype == NLMSG_DONE:
                        code, extack = _parse_error(data, offset, length, mflags, mtype)
                        if code:
                            raise NetlinkFailure(code, extack, replies)
                        return replies
                    else:
                        reply = msg_class(data, offset=offset)
                        reply.decode()
                        replies.append(reply)
                    offset += (length + 3) & ~3

    def _recv(self) -> bytes:
        data, _, flags, _ = self._sock.recvmsg(_RECV_BUFSIZE)
        if flags & socket.MSG_TRUNC:
            raise OSError(errno.EMSGSIZE, "netlink reply larger than the receive buffer")
        return data


def _header(ifindex: int | None = None, flags: int = 0) -> dict:
    """The request header; no device means a dump of all devices (or a global request)."""
    attrs: list = []
    if ifindex is not None:
        attrs.append(("ETHTOOL_A_HEADER_DEV_INDEX", ifindex))
    attrs.append(("ETHTOOL_A_HEADER_FLAGS", flags | ETHTOOL_FLAG_COMPACT_BITSETS))
    return {"attrs": attrs}


def _onoff(on: bool) -> str:
    return "on" if on else "off"


if sys.byteorder != "little":  # pragma: no cover - the words are host order; nothing else is
    log.debug("big-endian host: compact bitset words are decoded in host order")
