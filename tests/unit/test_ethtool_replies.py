"""Decoding ethtool genetlink replies, without a kernel.

Feature and channel replies were recorded from Linux 6.18 next to what ``ethtool`` printed;
ring and coalescing replies mirror physical NICs (ixgbe, mlx5) and were encoded by classes that
are not nodenetd's. See tests/fixtures/ethtool/README.md.
"""

from __future__ import annotations

import copy
import errno
import json
from pathlib import Path

import pytest

from nodenetd.config.vocabulary import KERNEL_FEATURES
from nodenetd.errors import Gone, Refused, Unsupported
from nodenetd.kernel.ethtool import (
    ETHTOOL_MSG_CHANNELS_GET,
    ETHTOOL_MSG_COALESCE_SET,
    ETHTOOL_MSG_FEATURES_GET,
    ETHTOOL_MSG_FEATURES_SET,
    ETHTOOL_MSG_RINGS_GET,
    ETHTOOL_MSG_STRSET_GET,
    EthtoolNetlink,
    FeatureState,
    Limits,
    NetlinkFailure,
    decode_attrs,
    decode_messages,
    encode_bitset,
    ethtool_channels_msg,
    ethtool_coalesce_msg,
    ethtool_features_msg,
    ethtool_rings_msg,
    ethtool_strset_msg,
    kernel_error,
    parse_coalesce,
    parse_feature_names,
    parse_features,
    parse_limits,
)
from tests.integration.ethtool_lab import ethtool_k_states

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ethtool"
WITNESS = json.loads((FIXTURES / "kernel_witness.json").read_text())
IFINDEX = WITNESS["ifindex"]  # lo, v0, v1 as recorded


def load(name: str) -> bytes:
    text = (FIXTURES / name).read_text()
    return bytes.fromhex("".join(line for line in text.splitlines() if not line.startswith("#")))


@pytest.fixture(scope="module")
def names() -> tuple[str, ...]:
    (reply,) = decode_messages(load("features_strset.hex"), ethtool_strset_msg)
    return parse_feature_names(reply)


@pytest.fixture(scope="module")
def veth_features(names) -> dict[int, FeatureState]:
    replies = decode_messages(load("features_dump_veth.hex"), ethtool_features_msg)
    return {reply.ifindex: parse_features(reply, names) for reply in replies}


# --- features ----------------------------------------------------------------------------------


def test_feature_names_are_the_kernels_string_set(names):
    assert len(names) == 64
    assert names[0] == "tx-scatter-gather"
    named = {name for name in names if name}
    assert len(named) == 60  # bits 2, 12, 13 and 32 are unused in 6.18
    assert named <= KERNEL_FEATURES  # the vocabulary covers every feature this kernel has


def test_recorded_features_dump_matches_ethtool(veth_features):
    assert set(veth_features) == set(IFINDEX.values())
    for dev, ifindex in IFINDEX.items():
        state = veth_features[ifindex]
        expected = ethtool_k_states(WITNESS["ethtool -k"][dev])
        assert len(expected) >= 55, dev
        decoded = {name: (state.is_on(name), state.is_fixed(name)) for name in expected}
        assert decoded == expected, dev


def test_recorded_features_tell_the_two_veth_ends_apart(veth_features):
    v0, v1 = veth_features[IFINDEX["v0"]], veth_features[IFINDEX["v1"]]
    assert v1.is_on("rx-gro") and not v0.is_on("rx-gro")
    assert v0.is_on("tx-generic-segmentation") and not v1.is_on("tx-generic-segmentation")
    assert not v1.is_on("tx-udp-segmentation") and v0.is_on("tx-udp-segmentation")
    assert veth_features[IFINDEX["lo"]].is_on("loopback")
    assert v0.is_fixed("loopback") and not v0.is_fixed("rx-gro")


def test_known_is_every_named_feature(veth_features, names):
    for state in veth_features.values():
        assert state.known == {name for name in names if name}
        assert state.active <= state.known and state.changeable <= state.known


def _encode(msg_class, cmd: int, attrs: list) -> bytes:
    """A message as pyroute2 encodes it (what the adapter sends, or a reply for the parsers)."""
    msg = msg_class()
    msg["cmd"] = cmd
    msg["version"] = 1
    msg["attrs"] = attrs
    msg["header"] = {"type": 21, "flags": 0, "sequence_number": 1, "pid": 0}
    msg.encode()
    return bytes(msg.data)


def _features_reply(size: int, **bitsets: int) -> bytes:
    header = {"attrs": [("ETHTOOL_A_HEADER_DEV_INDEX", 7)]}
    attrs = [("ETHTOOL_A_FEATURES_HEADER", header)]
    for kind, bits in bitsets.items():
        attrs.append((f"ETHTOOL_A_FEATURES_{kind.upper()}", encode_bitset(size, bits, None)))
    return _encode(ethtool_features_msg, 11, attrs)


def test_compact_bitsets_span_u32_words():
    names = tuple(f"f{i}" for i in range(64))
    bits = {i: 1 << i for i in (0, 1, 31, 32, 33, 63)}
    data = _features_reply(
        64,
        hw=bits[0] | bits[31] | bits[32] | bits[63],
        wanted=bits[0] | bits[33],
        active=bits[0] | bits[32],
        nochange=bits[31],
    )
    (reply,) = decode_messages(data, ethtool_features_msg)
    assert reply.ifindex == 7
    state = parse_features(reply, names)
    assert state.active == {"f0", "f32"}
    assert state.changeable == {"f0", "f32", "f63"}
    assert state.is_fixed("f31") and state.is_fixed("f1") and not state.is_fixed("f63")
    assert state.known == set(names)


def test_bits_beyond_the_names_still_count():
    (reply,) = decode_messages(
        _features_reply(70, hw=1 << 69, active=1 << 69), ethtool_features_msg
    )
    state = parse_features(reply, ("a", "b"))
    assert state.active == {"feature-bit-69"}
    assert state.known == {"a", "b", "feature-bit-69"}


# --- channels, rings, coalescing ---------------------------------------------------------------


def test_recorded_channels_dump_matches_ethtool():
    replies = decode_messages(load("channels_dump_veth.hex"), ethtool_channels_msg)
    limits = {reply.ifindex: parse_limits(reply) for reply in replies}
    assert IFINDEX["lo"] not in limits  # the kernel skips devices without channels
    assert limits[IFINDEX["v1"]] == Limits({"rx": 2, "tx": 4}, {"rx": 4, "tx": 4})
    assert limits[IFINDEX["v0"]] == Limits({"rx": 4, "tx": 4}, {"rx": 4, "tx": 4})
    witness = WITNESS["ethtool -l"]["v1"].split("Current hardware settings:")[1]
    assert "RX:\t\t2" in witness and "TX:\t\t4" in witness and "Combined:\tn/a" in witness


def test_ixgbe_rings():
    (reply,) = decode_messages(load("rings_ixgbe.hex"), ethtool_rings_msg)
    assert (reply.ifindex, reply.ifname) == (2, "eth0")
    assert parse_limits(reply) == Limits({"rx": 512, "tx": 512}, {"rx": 4096, "tx": 4096})


def test_mlx5_rings_ignore_what_the_vocabulary_has_no_key_for():
    (reply,) = decode_messages(load("rings_mlx5.hex"), ethtool_rings_msg)
    assert reply.get("ETHTOOL_A_RINGS_TCP_DATA_SPLIT") == 1
    limits = parse_limits(reply)
    assert limits == Limits({"rx": 1024, "tx": 1024}, {"rx": 8192, "tx": 8192})
    assert "rx-mini" not in limits.current and "rx-jumbo" not in limits.maximum


def test_rings_dump_of_several_devices():
    replies = decode_messages(load("rings_dump.hex"), ethtool_rings_msg)
    assert [(reply.ifindex, reply.ifname) for reply in replies] == [
        (2, "eth0"),
        (3, "eth1"),
        (4, "ens1f0np0"),
    ]
    limits = {reply.ifindex: parse_limits(reply) for reply in replies}
    assert limits[3] == Limits({"rx": 4096, "tx": 1024}, {"rx": 4096, "tx": 4096})
    assert limits[4].maximum == {"rx": 8192, "tx": 8192}


IXGBE_COALESCE = {"rx-usecs": 1, "tx-usecs": 0, "tx-frames-irq": 256}
MLX5_COALESCE = {
    "rx-usecs": 8,
    "rx-frames": 128,
    "tx-usecs": 16,
    "tx-frames": 32,
    "adaptive-rx": True,
    "adaptive-tx": True,
    "cqe-mode-rx": True,
    "cqe-mode-tx": False,
}


def test_ixgbe_coalesce_has_only_its_supported_keys():
    (reply,) = decode_messages(load("coalesce_ixgbe.hex"), ethtool_coalesce_msg)
    assert parse_coalesce(reply) == IXGBE_COALESCE


def test_mlx5_coalesce_booleans_are_bools():
    (reply,) = decode_messages(load("coalesce_mlx5.hex"), ethtool_coalesce_msg)
    values = parse_coalesce(reply)
    assert values == MLX5_COALESCE
    assert all(type(values[key]) is bool for key in ("adaptive-rx", "cqe-mode-rx", "cqe-mode-tx"))
    assert type(values["rx-frames"]) is int


def test_coalesce_dump_of_several_devices():
    replies = decode_messages(load("coalesce_dump.hex"), ethtool_coalesce_msg)
    assert {reply.ifindex: parse_coalesce(reply) for reply in replies} == {
        2: IXGBE_COALESCE,
        4: MLX5_COALESCE,
    }


def test_a_failed_dump_carries_the_error_and_what_came_before():
    with pytest.raises(NetlinkFailure) as caught:
        decode_messages(load("rings_dump_error.hex"), ethtool_rings_msg)
    failure = caught.value
    assert failure.code == errno.EIO
    assert failure.extack == "device is resetting"
    assert [reply.ifname for reply in failure.partial] == ["eth0"]


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error_class", "name"),
    [
        (errno.EOPNOTSUPP, Unsupported, "EOPNOTSUPP"),
        (524, Unsupported, "ENOTSUPP"),
        (errno.EBUSY, Unsupported, "EBUSY"),
        (errno.ENODEV, Gone, "ENODEV"),
        (errno.EINVAL, Refused, "EINVAL"),
        (errno.ERANGE, Refused, "ERANGE"),
    ],
)
def test_errno_mapping(code, error_class, name):
    error = kernel_error(NetlinkFailure(code, "the driver said no", []), "eth0", "rings")
    assert type(error) is error_class
    assert (error.target, error.setting, error.errno) == ("eth0", "rings", code)
    assert "the driver said no" in error.reason and name in error.reason


# --- the socket logic, replayed ------------------------------------------------------------------


class Replay(EthtoolNetlink):
    """EthtoolNetlink without a socket: ``answer(cmd, ifindex, dump)`` plays the kernel."""

    def __init__(self, answer, interfaces=()):
        self._feature_names = None
        self.answer = answer
        self.interfaces = list(interfaces)
        self.requests: list[tuple[int, int | None, bool, bytes]] = []

    def _request(self, cmd, msg_class, attrs, *, dump=False):
        data = _encode(msg_class, cmd, copy.deepcopy(attrs))
        header = _request_attrs(data, msg_class)[msg_class.header_attr]
        ifindex = header.get("ETHTOOL_A_HEADER_DEV_INDEX")
        self.requests.append((cmd, ifindex, dump, data))
        if cmd == ETHTOOL_MSG_STRSET_GET:
            return decode_messages(load("features_strset.hex"), ethtool_strset_msg)
        return self.answer(cmd, ifindex, dump)

    def _interfaces(self):
        return self.interfaces


def _request_attrs(data: bytes, msg_class) -> dict:
    return decode_attrs(msg_class, data, 20, len(data))


def test_after_a_failed_dump_the_rest_is_read_one_by_one():
    rings = {
        reply.ifindex: reply for reply in decode_messages(load("rings_dump.hex"), ethtool_rings_msg)
    }

    def kernel(cmd, ifindex, dump):
        assert cmd == ETHTOOL_MSG_RINGS_GET
        if dump:
            raise NetlinkFailure(errno.EIO, "device is resetting", [rings[2]])
        if ifindex in rings:
            return [rings[ifindex]]
        raise NetlinkFailure(errno.EOPNOTSUPP if ifindex == 1 else errno.ENODEV, None, [])

    sock = Replay(kernel, [(1, "lo"), (2, "eth0"), (3, "eth1"), (4, "ens1f0np0"), (9, "gone0")])
    result = sock.dump_rings()
    assert set(result) == {2, 3, 4}
    assert result[3].current == {"rx": 4096, "tx": 1024}
    asked = [ifindex for _, ifindex, dump, _ in sock.requests if not dump]
    assert asked == [1, 3, 4, 9]  # eth0 came with the dump and is not asked again


def test_set_features_sends_value_and_mask_of_the_requested_bits_only(names):
    sock = Replay(lambda cmd, ifindex, dump: [])
    sock.set_features(5, "eth0", {"rx-gro": True, "tx-generic-segmentation": False})
    cmd, ifindex, _, data = sock.requests[-1]
    assert (cmd, ifindex) == (ETHTOOL_MSG_FEATURES_SET, 5)
    wanted = _request_attrs(data, ethtool_features_msg)["ETHTOOL_A_FEATURES_WANTED"]
    assert wanted["ETHTOOL_A_BITSET_SIZE"] == 64
    assert "ETHTOOL_A_BITSET_NOMASK" not in wanted
    gro, gso = names.index("rx-gro"), names.index("tx-generic-segmentation")
    value = wanted["ETHTOOL_A_BITSET_VALUE"]
    mask = wanted["ETHTOOL_A_BITSET_MASK"]
    assert len(value) == len(mask) == 2
    as_int = lambda words: words[0] | words[1] << 32  # noqa: E731
    assert as_int(mask) == 1 << gro | 1 << gso
    assert as_int(value) == 1 << gro


def _set_reply(names, requested: dict[str, bool], missed: list[str]):
    """A FEATURES_SET_REPLY whose WANTED mask lists the bits that did not take effect."""
    value = sum(1 << names.index(name) for name, on in requested.items() if on)
    mask = sum(1 << names.index(name) for name in missed)
    attrs = [
        ("ETHTOOL_A_FEATURES_HEADER", {"attrs": [("ETHTOOL_A_HEADER_DEV_INDEX", 3)]}),
        ("ETHTOOL_A_FEATURES_WANTED", encode_bitset(len(names), value, mask)),
    ]
    return decode_messages(_encode(ethtool_features_msg, 12, attrs), ethtool_features_msg)


def _veth_kernel(names, set_reply):
    recorded = decode_messages(load("features_dump_veth.hex"), ethtool_features_msg)
    v0 = next(reply for reply in recorded if reply.ifindex == IFINDEX["v0"])

    def kernel(cmd, ifindex, dump):
        if cmd == ETHTOOL_MSG_FEATURES_GET:
            return [v0]
        return set_reply

    return kernel


def test_set_features_on_a_fixed_feature_is_unsupported(names):
    requested = {"loopback": True, "rx-gro": True}
    sock = Replay(_veth_kernel(names, _set_reply(names, requested, ["loopback"])))
    with pytest.raises(Unsupported) as caught:
        sock.set_features(IFINDEX["v0"], "v0", requested)
    assert caught.value.setting == "features.loopback"
    assert "loopback requested on, is off" in caught.value.reason


def test_set_features_the_kernel_kept_off_for_a_dependency_is_refused(names):
    requested = {"tx-tcp-segmentation": True}
    sock = Replay(_veth_kernel(names, _set_reply(names, requested, ["tx-tcp-segmentation"])))
    with pytest.raises(Refused) as caught:
        sock.set_features(IFINDEX["v0"], "v0", requested)
    assert caught.value.setting == "features.tx-tcp-segmentation"


def test_unknown_feature_is_unsupported_before_anything_is_sent():
    sock = Replay(lambda *args: pytest.fail("nothing may be sent"))
    with pytest.raises(Unsupported) as caught:
        sock.set_features(3, "v0", {"tx-lockless": False})  # a priv flag since 6.12
    assert caught.value.setting == "features.tx-lockless"
    assert [cmd for cmd, *_ in sock.requests] == [ETHTOOL_MSG_STRSET_GET]


def test_set_coalesce_encodes_booleans_as_u8_and_the_rest_as_u32():
    sock = Replay(lambda cmd, ifindex, dump: [])
    sock.set_coalesce(4, "ens1f0np0", {"adaptive-rx": False, "rx-usecs": 64, "cqe-mode-rx": True})
    cmd, ifindex, _, data = sock.requests[-1]
    assert (cmd, ifindex) == (ETHTOOL_MSG_COALESCE_SET, 4)
    attrs = _request_attrs(data, ethtool_coalesce_msg)
    assert attrs["ETHTOOL_A_COALESCE_USE_ADAPTIVE_RX"] == 0
    assert attrs["ETHTOOL_A_COALESCE_USE_CQE_MODE_RX"] == 1
    assert attrs["ETHTOOL_A_COALESCE_RX_USECS"] == 64
    assert data.count(bytes.fromhex("05000b0000")) == 1  # len 5, type 11 (adaptive-rx), u8 0


def test_channel_keys_the_device_does_not_report_are_unsupported():
    recorded = decode_messages(load("channels_dump_veth.hex"), ethtool_channels_msg)

    def kernel(cmd, ifindex, dump):
        assert cmd == ETHTOOL_MSG_CHANNELS_GET, "nothing may be set"
        return recorded[:1]

    sock = Replay(kernel)
    with pytest.raises(Unsupported) as caught:
        sock.set_channels(2, "v1", {"rx": 2, "combined": 2})
    assert caught.value.setting == "channels.combined"


def test_bad_keys_and_types_fail_before_anything_is_sent():
    sock = Replay(lambda *args: pytest.fail("nothing may be sent"))
    with pytest.raises(Unsupported):
        sock.set_coalesce(4, "eth0", {"rx-microseconds": 3})
    with pytest.raises(TypeError):
        sock.set_coalesce(4, "eth0", {"adaptive-rx": 1})
    with pytest.raises(Refused):
        sock.set_rings(4, "eth0", {"rx": -1})
    assert sock.requests == []
