"""The netlink core every nodenetd adapter shares: one socket class, one attribute codec, one
errno mapping.

``NetlinkSocket`` is a plain ``AF_NETLINK`` socket (rtnetlink, generic netlink...) with extended
acks, capped acks and a large receive buffer. It offers three calls:

- ``request``: one request and its replies up to the ack;
- ``dump``: one dump request and every reply up to ``NLMSG_DONE`` (restarted when the kernel
  flags it inconsistent, ``NLM_F_DUMP_INTR``);
- ``request_many``: a pipelined batch. The requests are concatenated into a few datagrams, each
  with ``NLM_F_ACK`` and its own sequence number; the kernel handles every message of a datagram
  in the sending thread and queues one ack per message (an error ack does not stop the ones
  after it). The result holds each request's replies or its ``NetlinkFailure``, in input order.

Events: ``MulticastSocket`` is a non-blocking socket subscribed to multicast groups, for an
event loop's ``add_reader``; ``genl_family`` resolves a generic netlink family's id and its
multicast groups; ``iter_attrs`` walks raw attributes (nested arrays).

Message payloads are bytes. ``encode_attrs`` and ``decode_attrs`` are driven by explicit
pyroute2-style ``nla_map`` tables (``(number, name, format)``, nested formats naming a class
attribute), so a layout is written down once and both directions follow it. pyroute2's own
codec builds an object per attribute (~35-90 us per small message); this one is plain struct.

pyroute2's socket classes are not used: their synchronous wrapper (0.9.7) runs a private asyncio
loop per thread and costs hundreds of microseconds per request.

Namespaces: a socket belongs to the network namespace it was created in. ``in_netns`` runs an
opener (a ``NetlinkSocket``, a ``MulticastSocket``...) in a short-lived thread that entered a
named namespace, so one process can hold sockets in several namespaces; ``socket_in_netns`` is
the common case.

Errors: ``kernel_error`` is nodenetd's single errno -> typed error mapping: EOPNOTSUPP,
ENOTSUPP (524) and EBUSY are ``Unsupported``, ENODEV and ENXIO are ``Gone``, anything else is
``Refused``. The reason reads "<extack message>: EINVAL (Invalid argument)".
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import functools
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from nodenetd.errors import Gone, KernelError, Refused, Unsupported

__all__ = [
    "ENOTSUPP",
    "NLMSGHDR",
    "MulticastSocket",
    "NetlinkFailure",
    "NetlinkSocket",
    "decode_attrs",
    "encode_attrs",
    "errno_name",
    "errno_text",
    "genl_family",
    "in_netns",
    "iter_attrs",
    "kernel_error",
    "nla",
    "parse_error",
    "socket_in_netns",
    "split_messages",
]

log = logging.getLogger(__name__)

ENOTSUPP = 524  # kernel-internal "operation not supported", leaks out of some drivers
_UNSUPPORTED_ERRNOS = frozenset({errno_mod.EOPNOTSUPP, ENOTSUPP, errno_mod.EBUSY})
_GONE_ERRNOS = frozenset({errno_mod.ENODEV, errno_mod.ENXIO})

# linux/netlink.h
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12  # Linux 4.20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # asm-generic/socket.h

NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid
_NLA_HDR = struct.Struct("=HH")
_NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF

RCVBUF = 4 << 20  # the kernel doubles it; acks of a whole chunk must fit (~1 KiB each)
BATCH_CHUNK = 256  # requests per datagram in request_many
_CHUNK_BYTES = 64 << 10  # and at most this many bytes (the send buffer is ~208 KiB)
_RECV_BUFSIZE = 1 << 20  # dump skbs are <= 32 KiB, unless a single link message is larger
_DUMP_ATTEMPTS = 3

# --------------------------------------------------------------------------------------------
# Errors


class NetlinkFailure(Exception):
    """The kernel answered a request with an error; ``partial`` holds replies received before."""

    def __init__(self, code: int, extack: str | None, partial: list):
        self.code = code
        self.extack = extack
        self.partial = partial
        super().__init__(code, extack)

    def describe(self) -> str:
        text = errno_text(self.code)
        return f"{self.extack}: {text}" if self.extack else text


def errno_name(code: int | None) -> str:
    """The kernel's name for an errno: Python calls 95 ENOTSUP, the kernel EOPNOTSUPP."""
    if code is None:
        return "E?"
    special = {errno_mod.EOPNOTSUPP: "EOPNOTSUPP", ENOTSUPP: "ENOTSUPP"}
    return special.get(code) or errno_mod.errorcode.get(code, f"errno {code}")


def errno_text(code: int | None) -> str:
    """The errno as the reason shows it: EINVAL (Invalid argument)."""
    if code is None:
        return "unknown error"
    if code == ENOTSUPP:
        return "ENOTSUPP (operation not supported by the driver)"
    return f"{errno_name(code)} ({os.strerror(code)})"


def kernel_error(
    cause: NetlinkFailure | OSError, target: str, setting: str, detail: str | None = None
) -> KernelError:
    """The typed nodenetd error for a kernel errno from netlink or from a file write.

    ``detail`` says what was being done ("write '1' failed"); the kernel's extended-ack
    message follows, then the errno name and text.
    """
    if isinstance(cause, NetlinkFailure):
        code, message = cause.code, cause.extack
    else:
        code, message = cause.errno, None
    reason = ": ".join(part for part in (detail, message, errno_text(code)) if part)
    if code in _UNSUPPORTED_ERRNOS:
        return Unsupported(target, setting, reason, code)
    if code in _GONE_ERRNOS:
        return Gone(target, setting, reason, code)
    return Refused(target, setting, reason, code)


def parse_error(data: bytes, offset: int, length: int, flags: int, mtype: int):
    """(errno, extack message) of an NLMSG_ERROR or NLMSG_DONE message; errno 0 is an ack."""
    if length < 20:
        return 0, None
    (code,) = struct.unpack_from("=i", data, offset + 16)
    if not flags & NLM_F_ACK_TLVS:
        return -code, None
    tlv = offset + 20
    if mtype == NLMSG_ERROR:
        # the request's header follows, and its payload too unless the ack is capped
        (orig_len,) = struct.unpack_from("=I", data, tlv)
        tlv += NLMSGHDR.size if flags & NLM_F_CAPPED else (orig_len + 3) & ~3
    end = offset + length
    message = None
    while tlv + 4 <= end:
        alen, atype = _NLA_HDR.unpack_from(data, tlv)
        if alen < 4:
            break
        if atype & 0x3FFF == NLMSGERR_ATTR_MSG:
            message = bytes(data[tlv + 4 : tlv + alen]).rstrip(b"\0").decode(errors="replace")
        tlv += (alen + 3) & ~3
    return -code, message


# --------------------------------------------------------------------------------------------
# Attributes: encode and decode by nla_map tables

_SCALARS = {
    "uint8": "B",
    "uint16": "H",
    "uint32": "I",
    "uint64": "Q",
    "int8": "b",
    "int16": "h",
    "int32": "i",
    "int64": "q",
}
_SCALAR, _ARRAY, _STRING, _FLAG, _NESTED, _HWADDR, _BYTES, _ASCIIZ = range(8)


@functools.cache
def _schema(cls: type) -> dict[int, tuple[str, int, Any]]:
    """{attribute number: (name, how to decode, detail)} from a class's explicit nla_map.

    Formats: uintN/intN, array(uintN), asciiz and string, flag, l2addr and hex (shown as
    aa:bb:..), cdata (bytes), none (skipped), or the name of a nested class attribute.
    """
    table: dict[int, tuple[str, int, Any]] = {}
    for number, name, spec in cls.nla_map:
        base, _, init = spec.partition("(")
        if base in _SCALARS:
            table[number] = (name, _SCALAR, struct.Struct("=" + _SCALARS[base]))
        elif base == "array":
            element = _SCALARS[init.rstrip(")")]
            table[number] = (name, _ARRAY, (element, struct.calcsize(element)))
        elif base == "asciiz":
            table[number] = (name, _ASCIIZ, None)
        elif base == "string":
            table[number] = (name, _STRING, None)
        elif base == "flag":
            table[number] = (name, _FLAG, None)
        elif base in ("l2addr", "hex"):
            table[number] = (name, _HWADDR, None)
        elif base == "cdata":
            table[number] = (name, _BYTES, None)
        elif base != "none":
            table[number] = (name, _NESTED, getattr(cls, base))
    return table


@functools.cache
def _by_name(cls: type) -> dict[str, tuple[int, int, Any]]:
    return {name: (number, how, detail) for number, (name, how, detail) in _schema(cls).items()}


def decode_attrs(cls: type, data: bytes, offset: int, end: int) -> dict:
    """Attributes between ``offset`` and ``end`` as {name: value}, following ``cls.nla_map``.

    Nests become dicts, arrays tuples, flags True; attributes the map marks "none" or does not
    know are skipped. An attribute that repeats (string-set entries) becomes a list.
    """
    table = _schema(cls)
    out: dict = {}
    unpack_hdr = _NLA_HDR.unpack_from
    while offset + 4 <= end:
        length, atype = unpack_hdr(data, offset)
        if length < 4 or offset + length > end:
            raise ValueError(f"malformed netlink attribute at offset {offset}")
        entry = table.get(atype & _NLA_TYPE_MASK)
        if entry is not None:
            name, how, detail = entry
            start, stop = offset + 4, offset + length
            if how == _SCALAR:
                value = detail.unpack_from(data, start)[0]
            elif how == _NESTED:
                value = decode_attrs(detail, data, start, stop)
            elif how in (_ASCIIZ, _STRING):
                value = bytes(data[start:stop]).split(b"\0", 1)[0].decode(errors="replace")
            elif how == _HWADDR:
                value = bytes(data[start:stop]).hex(":")
            elif how == _ARRAY:
                element, size = detail
                value = struct.unpack_from(f"={(stop - start) // size}{element}", data, start)
            elif how == _BYTES:
                value = bytes(data[start:stop])
            else:
                value = True
            if name in out:
                previous = out[name]
                out[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
            else:
                out[name] = value
        offset += (length + 3) & ~3
    return out


def encode_attrs(cls: type, attrs: Iterable[tuple[str, Any]] | Mapping[str, Any]) -> bytes:
    """Attributes in pyroute2's request form, ``[(name, value), ...]``, as wire bytes.

    A nested value is ``{"attrs": [...]}`` (or the list itself); the nested class's
    ``nla_flags`` (NLA_F_NESTED) go into its type. A flag is sent when its value is true.
    """
    if isinstance(attrs, Mapping):
        attrs = attrs["attrs"]
    table = _by_name(cls)
    parts = []
    for name, value in attrs:
        try:
            number, how, detail = table[name]
        except KeyError:
            raise ValueError(f"{cls.__name__} has no attribute {name!r} to encode") from None
        if how == _SCALAR:
            payload = detail.pack(value)
        elif how == _NESTED:
            payload = encode_attrs(detail, value)
            number |= getattr(detail, "nla_flags", 0)
        elif how == _ASCIIZ:
            payload = value.encode() + b"\0"
        elif how == _STRING:
            payload = value.encode()
        elif how == _ARRAY:
            element, _ = detail
            payload = struct.pack(f"={len(value)}{element}", *value)
        elif how == _HWADDR:
            payload = bytes.fromhex(value.replace(":", ""))
        elif how == _BYTES:
            payload = bytes(value)
        else:  # flag
            if not value:
                continue
            payload = b""
        parts.append(nla(number, payload))
    return b"".join(parts)


def nla(atype: int, payload: bytes) -> bytes:
    """One attribute: header, payload, padding to 4 bytes."""
    length = 4 + len(payload)
    return _NLA_HDR.pack(length, atype) + payload + b"\0" * (-length & 3)


def split_messages(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(offset, length, type, flags, seq) of each netlink message in ``data``."""
    offset = 0
    size = len(data)
    while offset + 16 <= size:
        length, mtype, flags, seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < 16 or offset + length > size:
            raise ValueError(f"malformed netlink message at offset {offset}")
        yield offset, length, mtype, flags, seq
        offset += (length + 3) & ~3


# --------------------------------------------------------------------------------------------
# The socket

Decode = Callable[[bytes, int, int], Any]  # (data, message offset, message length) -> value


class NetlinkSocket:
    """One netlink socket of a protocol in the network namespace of the thread that opens it.

    Requests are serialised by a lock, so an instance may be shared between threads. Calls
    block until the kernel answers (``timeout`` seconds at most, then TimeoutError).
    """

    def __init__(
        self, protocol: int, *, timeout: float = 5.0, rcvbuf: int = RCVBUF, strict: bool = False
    ) -> None:
        """``strict`` asks for NETLINK_GET_STRICT_CHK: the kernel then validates get and dump
        requests and honours their filters (an rtnetlink route dump by table, protocol,
        type or device). ``strict_check`` says whether the kernel agreed (Linux >= 4.20);
        callers filter what matters themselves as well, so an older kernel only costs a
        larger dump."""
        self._lock = threading.Lock()
        self.strict_check = False
        self._seq = 0
        self._timeout = timeout
        self._buf = bytearray(_RECV_BUFSIZE)
        self._view = memoryview(self._buf)
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        try:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            self._sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            if strict:
                try:
                    self._sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
                    self.strict_check = True
                except OSError:  # ENOPROTOOPT before 4.20: dumps are simply unfiltered
                    pass
            try:  # past net.core.rmem_max; needs CAP_NET_ADMIN
                self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except PermissionError:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self._sock.bind((0, 0))
            self._sock.settimeout(timeout)
        except BaseException:
            self._sock.close()
            raise

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> NetlinkSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- requests

    def request(
        self, msg_type: int, payload: bytes, *, flags: int = 0, decode: Decode | None = None
    ) -> list:
        """Send one request; its decoded replies up to the ack. Raises NetlinkFailure."""
        (outcome,) = self.request_many([(msg_type, payload)], flags=flags, decode=decode)
        if isinstance(outcome, NetlinkFailure):
            raise outcome
        return outcome

    def request_many(
        self,
        requests: Sequence[tuple[int, bytes]],
        *,
        flags: int = 0,
        decode: Decode | None = None,
        chunk: int = BATCH_CHUNK,
    ) -> list[list | NetlinkFailure]:
        """Pipeline ``(msg_type, payload)`` requests: each one's replies (``[]`` for a bare ack)
        or its NetlinkFailure, aligned with the input.

        Requests go out in chunks of at most ``chunk`` messages, one datagram each, and the acks
        of a chunk are read before the next is sent, so the receive buffer holds at most one
        chunk of answers. If it overflows anyway (ENOBUFS: the kernel dropped answers), the
        requests whose ack was lost are sent again in smaller chunks, so requests must be
        idempotent (set to a value, not toggle).
        """
        results: list[list | NetlinkFailure | None] = [None] * len(requests)
        todo = list(range(len(requests)))
        size = max(1, chunk)
        with self._lock:
            while todo:
                lost: list[int] = []
                for part in self._chunks(todo, requests, size):
                    outcomes = self._exchange([requests[i] for i in part], flags, decode)
                    for i, outcome in zip(part, outcomes, strict=True):
                        if outcome is None:
                            lost.append(i)
                        else:
                            results[i] = outcome
                if lost and size == 1:  # not even one answer fits: give up on these
                    for i in lost:
                        results[i] = NetlinkFailure(
                            errno_mod.ENOBUFS, "the kernel's answer was lost (receive buffer)", []
                        )
                    break
                if lost:
                    log.warning(
                        "netlink: %d answer(s) lost to a receive buffer overrun; "
                        "sending them again, %d per datagram",
                        len(lost),
                        max(1, size // 4),
                    )
                todo, size = lost, max(1, size // 4)
        return results  # type: ignore[return-value]

    def dump(self, msg_type: int, payload: bytes, *, decode: Decode) -> list:
        """Every reply of a dump request. Raises NetlinkFailure (with the replies received
        before the error as ``partial``). A dump the kernel marks interrupted (the object
        list changed meanwhile) is started again, up to 3 times."""
        with self._lock:
            for attempt in range(1, _DUMP_ATTEMPTS + 1):
                seq = self._next_seqs(1)
                header = NLMSGHDR.pack(
                    NLMSGHDR.size + len(payload), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
                )
                self._sock.send(header + payload)
                replies: list = []
                interrupted = False
                done = False
                while not done:
                    data = self._recv()
                    for offset, length, mtype, mflags, mseq in split_messages(data):
                        if mseq != seq:
                            continue  # a late answer to an earlier request that timed out
                        interrupted |= bool(mflags & NLM_F_DUMP_INTR)
                        if mtype in (NLMSG_ERROR, NLMSG_DONE):
                            code, extack = parse_error(data, offset, length, mflags, mtype)
                            if code:
                                raise NetlinkFailure(code, extack, replies)
                            done = True
                            break
                        replies.append(decode(data, offset, length))
                if not interrupted:
                    return replies
                log.debug("netlink dump %d interrupted by a change (attempt %d)", msg_type, attempt)
            log.warning(
                "netlink dump %d kept changing; using a possibly inconsistent one", msg_type
            )
            return replies

    # -- internals

    def _next_seqs(self, count: int) -> int:
        """The first of ``count`` consecutive sequence numbers (never 0, wrapping at 2**32)."""
        if self._seq + count > 0xFFFFFFFF:
            self._seq = 0
        first = self._seq + 1
        self._seq += count
        return first

    @staticmethod
    def _chunks(
        todo: list[int], requests: Sequence[tuple[int, bytes]], size: int
    ) -> Iterator[list[int]]:
        part: list[int] = []
        nbytes = 0
        for i in todo:
            length = NLMSGHDR.size + len(requests[i][1])
            if part and (len(part) >= size or nbytes + length > _CHUNK_BYTES):
                yield part
                part, nbytes = [], 0
            part.append(i)
            nbytes += (length + 3) & ~3
        if part:
            yield part

    def _exchange(
        self, requests: list[tuple[int, bytes]], flags: int, decode: Decode | None
    ) -> list[list | NetlinkFailure | None]:
        """Send requests as one datagram and read every answer; None where it was lost."""
        first = self._next_seqs(len(requests))
        flags |= NLM_F_REQUEST | NLM_F_ACK
        messages = []
        for seq, (msg_type, payload) in enumerate(requests, first):
            length = NLMSGHDR.size + len(payload)
            messages.append(NLMSGHDR.pack(length, msg_type, flags, seq, 0))
            messages.append(payload + b"\0" * (-length & 3))
        self._sock.send(b"".join(messages))

        # The kernel handled the whole datagram inside send(): every answer is queued by now,
        # or was dropped because the receive buffer was full (ENOBUFS).
        outcomes: list[list | NetlinkFailure | None] = [None] * len(requests)
        replies: list[list] = [[] for _ in requests]
        pending = len(requests)
        overrun = False
        while pending:
            try:
                data = self._recv(block=not overrun)
            except BlockingIOError:
                break  # after an overrun: the queue is drained, the rest was dropped
            except OSError as exc:
                if exc.errno != errno_mod.ENOBUFS:
                    raise
                overrun = True
                continue
            for offset, length, mtype, mflags, mseq in split_messages(data):
                i = mseq - first
                if not 0 <= i < len(requests) or outcomes[i] is not None:
                    continue  # not ours: a late answer to an earlier request that timed out
                if mtype in (NLMSG_ERROR, NLMSG_DONE):
                    code, extack = parse_error(data, offset, length, mflags, mtype)
                    outcomes[i] = NetlinkFailure(code, extack, replies[i]) if code else replies[i]
                    pending -= 1
                elif decode is not None:
                    replies[i].append(decode(data, offset, length))
        return outcomes

    def _recv(self, *, block: bool = True) -> bytes:
        if not block:
            self._sock.settimeout(0.0)
        try:
            nbytes, _, flags, _ = self._sock.recvmsg_into([self._view])
        finally:
            if not block:
                self._sock.settimeout(self._timeout)
        if flags & socket.MSG_TRUNC:
            raise OSError(errno_mod.EMSGSIZE, "netlink message larger than the receive buffer")
        return self._view[:nbytes].tobytes()


# --------------------------------------------------------------------------------------------
# Events: multicast subscriptions and generic netlink families

NETLINK_ADD_MEMBERSHIP = 1  # linux/netlink.h, socket option level SOL_NETLINK
GENL_ID_CTRL = 0x10  # the generic netlink controller's family id
CTRL_CMD_GETFAMILY = 3
_GENLMSGHDR = struct.Struct("=BBH")  # cmd, version, reserved
_CTRL_ATTR_FAMILY_ID = 1
_CTRL_ATTR_FAMILY_NAME = 2
_CTRL_ATTR_MCAST_GROUPS = 7
_CTRL_ATTR_MCAST_GRP_NAME = 1
_CTRL_ATTR_MCAST_GRP_ID = 2
EVENT_RCVBUF = 8 << 20  # an event socket's default receive buffer (the kernel doubles it)
_EVENT_BUFSIZE = 64 << 10  # one notification; a link's is ~1.5 KiB, more with many SR-IOV VFs


def iter_attrs(data: bytes, offset: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type without flags, payload start, payload end) of each attribute between ``offset``
    and ``end``: the raw walk for what an nla_map cannot name, such as the numbered entries
    of a nested array."""
    while offset + 4 <= end:
        length, atype = _NLA_HDR.unpack_from(data, offset)
        if length < 4 or offset + length > end:
            raise ValueError(f"malformed netlink attribute at offset {offset}")
        yield atype & _NLA_TYPE_MASK, offset + 4, offset + length
        offset += (length + 3) & ~3


class MulticastSocket:
    """A non-blocking netlink socket subscribed to multicast groups: an event source for an
    event loop (``loop.add_reader(sock.fileno(), ...)``).

    The groups are joined (``NETLINK_ADD_MEMBERSHIP``, which takes group numbers above 32 as
    well) before the constructor returns, so a dump taken afterwards, on another socket, misses
    nothing. The receive buffer is set past ``net.core.rmem_max`` with SO_RCVBUFFORCE when
    the process has CAP_NET_ADMIN; when it still overflows, ``recv`` raises OSError(ENOBUFS)
    once: notifications were dropped and the owner must resynchronise from a dump. From that
    drop on, the kernel drops *every* notification for the socket until its queue has been
    read empty (NETLINK_S_CONGESTED), silently after the first report: read the queue empty
    (what it holds predates the loss) before taking the dump. A notification larger than the
    read buffer is lost too and reported the same way; the buffer grows for the next one.
    """

    def __init__(self, protocol: int, groups: Iterable[int], *, rcvbuf: int = EVENT_RCVBUF) -> None:
        self._view = memoryview(bytearray(_EVENT_BUFSIZE))
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        try:
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except PermissionError:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self._sock.bind((0, 0))
            for group in groups:
                self._sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    @property
    def rcvbuf(self) -> int:
        """The receive buffer the kernel granted (twice what was asked: it counts overhead)."""
        return self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv(self) -> bytes | None:
        """The next queued datagram (one notification, as the kernel sends them), or None when
        the queue is empty. Raises OSError(ENOBUFS) after an overflow."""
        try:
            nbytes, _, flags, _ = self._sock.recvmsg_into([self._view])
        except BlockingIOError:
            return None
        if flags & socket.MSG_TRUNC:  # the rest of the datagram is gone
            self._view = memoryview(bytearray(len(self._view) * 4))
            raise OSError(errno_mod.ENOBUFS, "a notification was larger than the read buffer")
        return self._view[:nbytes].tobytes()

    def pump(self, handle: Callable[[bytes], None], budget: int) -> int | None:
        """Hand up to ``budget`` queued datagrams to ``handle`` (the readable callback of an
        event source). After an overflow, read the queue empty instead and return how many
        datagrams were discarded: the caller must resynchronise. None: no loss."""
        for _ in range(budget):
            try:
                data = self.recv()
            except OSError as exc:
                if exc.errno != errno_mod.ENOBUFS:
                    raise
                return self._discard_queue()
            if data is None:
                return None
            handle(data)
        return None

    def _discard_queue(self) -> int:
        """Everything queued predates the loss, and the kernel drops every new notification
        until the queue is empty: empty it."""
        discarded = 0
        while True:
            try:
                if self.recv() is None:
                    return discarded
                discarded += 1
            except OSError as exc:
                if exc.errno != errno_mod.ENOBUFS:
                    raise

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> MulticastSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def genl_family(sock: NetlinkSocket, name: str) -> tuple[int, Mapping[str, int]]:
    """(family id, {multicast group name: group id}) of a generic netlink family, from the
    controller (CTRL_CMD_GETFAMILY). Raises NetlinkFailure (ENOENT: no such family)."""

    def decode(data: bytes, offset: int, length: int) -> tuple[int, dict[str, int]]:
        family_id = 0
        groups: dict[str, int] = {}
        start = offset + NLMSGHDR.size + _GENLMSGHDR.size
        for atype, begin, stop in iter_attrs(data, start, offset + length):
            if atype == _CTRL_ATTR_FAMILY_ID:
                (family_id,) = struct.unpack_from("=H", data, begin)
            elif atype == _CTRL_ATTR_MCAST_GROUPS:
                for _index, entry, entry_end in iter_attrs(data, begin, stop):
                    group_name, group_id = None, None
                    for gtype, gbegin, gstop in iter_attrs(data, entry, entry_end):
                        if gtype == _CTRL_ATTR_MCAST_GRP_NAME:
                            group_name = bytes(data[gbegin:gstop]).split(b"\0", 1)[0].decode()
                        elif gtype == _CTRL_ATTR_MCAST_GRP_ID:
                            (group_id,) = struct.unpack_from("=I", data, gbegin)
                    if group_name is not None and group_id is not None:
                        groups[group_name] = group_id
        return family_id, groups

    payload = _GENLMSGHDR.pack(CTRL_CMD_GETFAMILY, 1, 0) + nla(
        _CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0"
    )
    replies = sock.request(GENL_ID_CTRL, payload, decode=decode)
    if not replies:
        raise NetlinkFailure(errno_mod.ENOENT, f"no reply for generic netlink family {name}", [])
    family_id, groups = replies[0]
    return family_id, groups


# --------------------------------------------------------------------------------------------
# Network namespaces

CLONE_NEWNET = 0x40000000  # linux/sched.h
_T = TypeVar("_T")


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def in_netns(netns: str | None, opener: Callable[[], _T]) -> _T:
    """``opener()`` run in the named network namespace (/run/netns/NAME), or right here.

    A socket belongs to the namespace it was created in, for good: a short-lived thread
    enters the namespace (setns affects only the calling thread), calls ``opener`` and ends,
    and the socket it returns keeps working from any thread. A missing namespace is ``Gone``.
    """
    if netns is None:
        return opener()
    where = f"netns {netns}"
    if not netns or "/" in netns or netns in (".", ".."):
        raise Gone(where, "open namespace", "not a namespace name", errno_mod.ENOENT)
    try:
        fd = os.open(os.path.join("/run/netns", netns), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise Gone(where, "open namespace", "no such namespace", errno_mod.ENOENT) from exc
    except OSError as exc:
        raise kernel_error(exc, where, "open namespace") from exc
    box: list[Any] = []

    def enter_and_open() -> None:
        try:
            _setns(fd)
        except OSError as exc:
            box.append(kernel_error(exc, where, "open namespace"))
            return
        try:
            box.append(opener())
        except BaseException as exc:  # handed to the caller's thread
            box.append(exc)

    try:
        thread = threading.Thread(target=enter_and_open, name=f"netns-{netns}", daemon=True)
        thread.start()
        thread.join()
    finally:
        os.close(fd)
    (result,) = box
    if isinstance(result, BaseException):
        raise result
    return result


def socket_in_netns(
    netns: str | None, protocol: int = socket.NETLINK_ROUTE, **options: Any
) -> NetlinkSocket:
    """A ``NetlinkSocket`` (``options`` as its constructor takes them) in the named namespace,
    or in this thread's when ``netns`` is None. Failing to open it in a namespace is the
    typed error for that namespace."""
    try:
        return in_netns(netns, lambda: NetlinkSocket(protocol, **options))
    except OSError as exc:
        if netns is None:
            raise
        raise kernel_error(exc, f"netns {netns}", "open namespace") from exc
