"""bench/failover's receiver-side witness: every iperf3 UDP datagram reaching the server, with
the kernel's receive timestamp and iperf3's sequence number.

Runs inside the server namespace (stdlib only: it starts fast in the kernel-lab VM too). A
packet socket with a classic BPF filter sees the IPv4 UDP datagrams to PORT on every
interface of the namespace before the iperf3 server does; SO_TIMESTAMPNS gives the arrival
time (CLOCK_REALTIME, the clock the bench stamps its cuts with).

Commands, one per line on stdin, answered with one line on stdout:
    count        -> N (datagrams recorded since the last dump or reset)
    reset        -> ok
    dump PATH    -> ok N (writes {"t": [ns...], "seq": [...], "at": [i...], "sent": [ns...]}
                    to PATH, at[k] indexing the interface arguments, sent[k] the time
                    iperf3 stamped into the datagram; then resets)
EOF ends it. Interface arguments say where to watch: ``NAME`` for datagrams received on
NAME, ``NAME:out`` for datagrams sent out of it. A tap sees a frame before anything on that
interface can drop it (a bridge port's state, tc ingress), so on a router the ports show
which member carried a datagram and the egress towards the server shows which got through.

    python -m bench.failover_sniff PORT IFNAME[:out]...
"""

from __future__ import annotations

import ctypes
import json
import os
import selectors
import socket
import struct
import sys
from array import array

ETH_P_ALL, ETH_P_IP = 0x0003, 0x0800
SKF_AD_PROTOCOL = 0xFFFFF000  # SKF_AD_OFF + SKF_AD_PROTOCOL: the skb's ethertype
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4
SNAP = 64  # IP header + UDP header + iperf3's sec, usec, seq fit
BATCH = 256  # datagrams read per pass; commands are answered between passes


def udp_port_filter(port: int) -> list[tuple[int, int, int, int]]:
    """Classic BPF: accept unfragmented IPv4 UDP to ``port`` (offset 0 is the IP header on a
    SOCK_DGRAM packet socket), ``SNAP`` bytes of it."""
    return [
        (0x28, 0, 0, SKF_AD_PROTOCOL),  # ldh proto
        (0x15, 0, 8, ETH_P_IP),  # jeq IPv4, else drop
        (0x30, 0, 0, 9),  # ldb [9]: protocol
        (0x15, 0, 6, 17),  # jeq UDP, else drop
        (0x28, 0, 0, 6),  # ldh [6]: flags + fragment offset
        (0x45, 4, 0, 0x1FFF),  # jset fragment offset: drop
        (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf): IP header length
        (0x48, 0, 0, 2),  # ldh [x+2]: UDP destination port
        (0x15, 0, 1, port),  # jeq PORT, else drop
        (0x06, 0, 0, SNAP),  # ret SNAP
        (0x06, 0, 0, 0),  # ret 0
    ]


def open_socket(port: int) -> tuple[socket.socket, ctypes.Array]:
    # ETH_P_ALL: a tap, which sees a bridge port's frames before the bridge takes them
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    program = udp_port_filter(port)
    blob = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in program))
    fprog = struct.pack("HL", len(program), ctypes.addressof(blob))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)  # root: past rmem_max
    sock.setblocking(False)
    return sock, blob  # the filter buffer must outlive the setsockopt (the kernel copies it)


def main(argv: list[str]) -> int:
    port = int(argv[1])
    # "NAME": datagrams received on NAME; "NAME:out": datagrams sent out of NAME
    wanted = {spec.partition(":")[0]: (index, spec.endswith(":out"))
              for index, spec in enumerate(argv[2:])}
    sock, _blob = open_socket(port)
    times, seqs, where, sent = array("q"), array("L"), array("B"), array("q")
    cmsg_space = socket.CMSG_SPACE(16)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "sock")
    selector.register(sys.stdin, selectors.EVENT_READ, "stdin")
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            if key.data == "sock":
                for _ in range(BATCH):  # bounded: a flood must not starve the commands
                    try:
                        data, anc, _flags, addr = sock.recvmsg(SNAP, cmsg_space)
                    except BlockingIOError:
                        break
                    index, outgoing = wanted.get(addr[0], (None, False))
                    if index is None or (addr[2] == PACKET_OUTGOING) != outgoing:
                        continue
                    ihl = (data[0] & 0x0F) * 4
                    if len(data) < ihl + 20:
                        continue
                    stamp = 0
                    for level, kind, value in anc:
                        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                            sec, nsec = struct.unpack("qq", value[:16])
                            stamp = sec * 1_000_000_000 + nsec
                    sec, usec, seq = struct.unpack_from("!III", data, ihl + 8)
                    times.append(stamp)
                    seqs.append(seq)
                    where.append(index)
                    sent.append(sec * 1_000_000_000 + usec * 1000)
                continue
            line = sys.stdin.readline()
            if not line:
                return 0
            command, _, arg = line.strip().partition(" ")
            if command == "count":
                print(len(times), flush=True)
            elif command in ("reset", "dump"):
                if command == "dump":
                    tmp = f"{arg}.tmp"
                    with open(tmp, "w") as out:
                        json.dump({"t": list(times), "seq": list(seqs), "at": list(where),
                                   "sent": list(sent)}, out)
                    os.replace(tmp, arg)
                print(f"ok {len(times)}", flush=True)
                times, seqs, where, sent = array("q"), array("L"), array("B"), array("q")
            else:
                print(f"error: unknown command {command!r}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
