"""TEMPORARY exploration (deleted after use)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.root]

DUMP = r'''
import socket, struct, sys
from nodenetd.kernel.netlink import NetlinkSocket
name = sys.argv[1]
payload = struct.pack("=BxHiII", 0, 0, 0, 0, 0)
ifn = name.encode() + b"\0"
attr = struct.pack("=HH", 4 + len(ifn), 3) + ifn + b"\0" * (-(4 + len(ifn)) & 3)
mask = struct.pack("=HHI", 8, 29, 8)
with NetlinkSocket(socket.NETLINK_ROUTE) as nl:
    r = nl.request(18, payload + attr + mask, decode=lambda d, o, l: bytes(d[o:o+l]))
print(r[0].hex())
'''


def sh(ns, *argv):
    p = ns.run(*argv, check=False)
    return f"$ {' '.join(argv)}\nrc={p.returncode}\n{p.stdout}{p.stderr}"


def test_explore(make_netns):
    out = []
    node, sw = make_netns("node"), make_netns("sw")
    for m, s in (("m0", "s0"), ("m1", "s1")):
        node.veth(m, s, peer_ns=sw)
    out.append(sh(node, "ip", "link", "add", "b0", "type", "bond"))
    out.append(sh(node, "ip", "-j", "-d", "link", "show", "b0"))
    out.append(sh(node, "ip", "link", "add", "b1", "type", "bond", "mode", "active-backup",
                  "miimon", "100", "updelay", "200", "downdelay", "300", "peer_notify_delay", "400",
                  "num_grat_arp", "4", "resend_igmp", "3", "fail_over_mac", "active",
                  "primary_reselect", "better", "arp_missed_max", "5",
                  "ns_ip6_target", "2001:db8::1,2001:db8::2", "arp_ip_target", "192.0.2.1,192.0.2.2",
                  "arp_all_targets", "all"))
    out.append(sh(node, "ip", "link", "add", "b2", "type", "bond", "mode", "active-backup",
                  "arp_interval", "100", "arp_ip_target", "192.0.2.1,192.0.2.2", "ns_ip6_target", "2001:db8::1",
                  "arp_validate", "all", "arp_all_targets", "all", "arp_missed_max", "3"))
    out.append(sh(node, "ip", "-j", "-d", "link", "show", "b2"))
    out.append(sh(node, "ip", "-j", "-d", "link", "show", "b1"))
    py = os.path.join(os.getcwd(), ".venv/bin/python")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for b in ("b0", "b1", "b2"):
        p = subprocess.run(node.exec_argv(py, "-c", DUMP, b), capture_output=True, text=True, env=env)
        out.append(f"HEX {b} " + p.stdout + p.stderr)
    # members
    for m in ("m0", "m1"):
        out.append(sh(node, "ip", "link", "set", m, "down"))
        out.append(sh(node, "ip", "link", "set", m, "master", "b1"))
    out.append(sh(node, "ip", "link", "set", "b1", "up"))
    out.append(sh(node, "ip", "link", "set", "m1", "type", "bond_slave", "prio", "-5"))
    out.append(sh(node, "ip", "link", "set", "b1", "type", "bond", "primary", "m0"))
    out.append(sh(node, "ip", "-j", "-d", "link", "show", "m1"))
    out.append(sh(node, "ip", "-j", "-d", "link", "show", "b1"))
    p = subprocess.run(node.exec_argv(py, "-c", DUMP, "m1"), capture_output=True, text=True, env=env)
    out.append("HEX m1 " + p.stdout + p.stderr)
    p = subprocess.run(node.exec_argv(py, "-c", DUMP, "b1"), capture_output=True, text=True, env=env)
    out.append("HEX b1-with-members " + p.stdout + p.stderr)
    # errors
    out.append(sh(node, "ip", "link", "set", "b1", "type", "bond", "mode", "balance-xor"))
    out.append(sh(node, "ip", "link", "set", "b1", "type", "bond", "fail_over_mac", "none"))
    out.append(sh(node, "ip", "link", "set", "b0", "up"))
    out.append(sh(node, "ip", "link", "set", "b0", "type", "bond", "mode", "balance-xor"))
    out.append(sh(node, "ip", "link", "set", "b0", "down"))
    out.append(sh(node, "ip", "link", "set", "b0", "type", "bond", "miimon", "0"))
    out.append(sh(node, "ip", "link", "set", "b0", "type", "bond", "updelay", "0"))
    out.append(sh(node, "ip", "link", "set", "b0", "type", "bond", "miimon", "100", "updelay", "250"))
    out.append(sh(node, "ip", "-j", "-d", "link", "show", "b0"))
    out.append(sh(node, "ip", "link", "set", "b0", "type", "bond", "miimon", "50"))
    out.append(sh(node, "ip", "-j", "-d", "link", "show", "b0"))
    out.append(sh(node, "ip", "link", "set", "b0", "type", "bond", "arp_interval", "100"))
    out.append(sh(node, "ip", "-j", "-d", "link", "show", "b0"))
    out.append(sh(node, "ip", "link", "set", "b1", "type", "bond", "active_slave", "m1"))
    out.append(sh(node, "ip", "link", "set", "b1", "type", "bond", "arp_missed_max", "0"))
    out.append(sh(node, "ip", "link", "set", "b1", "type", "bond", "ns_ip6_target", "ff02::1"))
    out.append(sh(node, "ip", "link", "set", "b1", "type", "bond", "ns_ip6_target", "fe80::1"))
    out.append(sh(node, "ip", "link", "set", "b1", "type", "bond", "arp_validate", "all"))
    out.append(sh(node, "ip", "link", "set", "b1", "type", "bond", "active_slave", "b0"))
    out.append(sh(node, "ip", "link", "set", "b1", "type", "bond", "primary", "b0"))
    out.append(sh(node, "ip", "-j", "-d", "link", "show", "b1"))
    out.append(sh(node, "ip", "link", "set", "m0", "nomaster"))
    out.append(sh(node, "ip", "link", "set", "m0", "type", "bond_slave", "prio", "3"))
    out.append(sh(node, "dmesg"))
    text = "\n".join(out)
    dest = os.environ.get("NODENETD_KERNEL_LAB_OUT", "/tmp")
    with open(os.path.join(dest, "explore.txt"), "w") as fh:
        fh.write(text)
    print(text)
