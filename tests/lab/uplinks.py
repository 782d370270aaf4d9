"""A dual-uplink lab: a node with two uplinks to two routers, and a server behind both.

    node                       router ra (br0 over port ra0)        server
      a0 192.0.2.2/26      --- br0 192.0.2.1/26       sa 198.18.1.1/30 --- sa 198.18.1.2/30
         2001:db8:a::2/64          2001:db8:a::1/64      2001:db8:1::1/64     2001:db8:1::2/64
      b0 198.51.100.2/24   --- br0 198.51.100.1/24    sb 198.18.2.1/30 --- sb 198.18.2.2/30
         2001:db8:b::2/64          2001:db8:b::1/64      2001:db8:2::1/64     2001:db8:2::2/64
                               router rb (br0 over port rb0)        lo 203.0.113.10/32,
                                                                       2001:db8:ff::10/128

Both routers forward to the server's address on its loopback, and the server returns
traffic for each node subnet through the router it belongs to. The node starts with no
route to the server: that is the failover group's job.

Faults, all from the router side, all leaving the node's own configuration alone:
``cut(member)`` sets the router's port down (the node's member loses carrier: a pulled
cable); ``block(member)`` disables the router's bridge port (every frame dropped, carrier
stays up: a gray failure); ``blackhole(member)`` drops only what the router would route to
the server (the router itself still answers: one probe target of two lost).
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.lab.netns import Netns

SERVER_V4, SERVER_V6 = "203.0.113.10", "2001:db8:ff::10"
UPLINKS = {
    "a0": {"node": ("192.0.2.2/26", "2001:db8:a::2/64"),
           "router": ("192.0.2.1/26", "2001:db8:a::1/64"),
           "link": ("198.18.1.1/30", "198.18.1.2/30", "2001:db8:1::1/64", "2001:db8:1::2/64"),
           "subnets": ("192.0.2.0/26", "2001:db8:a::/64")},
    "b0": {"node": ("198.51.100.2/24", "2001:db8:b::2/64"),
           "router": ("198.51.100.1/24", "2001:db8:b::1/64"),
           "link": ("198.18.2.1/30", "198.18.2.2/30", "2001:db8:2::1/64", "2001:db8:2::2/64"),
           "subnets": ("198.51.100.0/24", "2001:db8:b::/64")},
}


def gateway(member: str, version: int = 4) -> str:
    return UPLINKS[member]["router"][0 if version == 4 else 1].split("/")[0]


def node_address(member: str, version: int = 4) -> str:
    return UPLINKS[member]["node"][0 if version == 4 else 1].split("/")[0]


@dataclass
class UplinkLab:
    node: Netns
    routers: dict[str, Netns]  # by node member
    server: Netns

    @classmethod
    def build(cls, make_netns) -> UplinkLab:
        node, server = make_netns("fo-node"), make_netns("fo-srv")
        routers = {"a0": make_netns("fo-ra"), "b0": make_netns("fo-rb")}
        for ns in (node, server, *routers.values()):
            ns.run("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0",
                   "net.ipv4.conf.default.rp_filter=0")
        server.run("ip", "addr", "add", f"{SERVER_V4}/32", "dev", "lo")
        server.run("ip", "addr", "add", f"{SERVER_V6}/128", "dev", "lo")
        for member, router in routers.items():
            spec = UPLINKS[member]
            port = f"r{member}"
            node.veth(member, port, peer_ns=router)
            router.run("ip", "link", "add", "br0", "type", "bridge", "stp_state", "0",
                       "forward_delay", "0")
            router.run("ip", "link", "set", port, "master", "br0")
            router.run("ip", "link", "set", "br0", "up")
            router.run("sysctl", "-qw", "net.ipv4.ip_forward=1",
                       "net.ipv6.conf.all.forwarding=1")
            v4, v6 = spec["router"]
            router.run("ip", "addr", "add", v4, "dev", "br0")
            router.run("ip", "addr", "add", v6, "dev", "br0", "nodad")
            node.run("ip", "addr", "add", spec["node"][0], "dev", member)
            node.run("ip", "addr", "add", spec["node"][1], "dev", member, "nodad")
            uplink = f"s{member[0]}"
            router.veth(uplink, f"{uplink}-tmp", peer_ns=server)
            server.run("ip", "link", "set", f"{uplink}-tmp", "name", uplink)
            server.run("ip", "link", "set", uplink, "up")
            r4, s4, r6, s6 = spec["link"]
            router.run("ip", "addr", "add", r4, "dev", uplink)
            router.run("ip", "addr", "add", r6, "dev", uplink, "nodad")
            server.run("ip", "addr", "add", s4, "dev", uplink)
            server.run("ip", "addr", "add", s6, "dev", uplink, "nodad")
            router.run("ip", "route", "add", f"{SERVER_V4}/32", "via", s4.split("/")[0])
            router.run("ip", "-6", "route", "add", f"{SERVER_V6}/128", "via",
                       s6.split("/")[0])
            sub4, sub6 = spec["subnets"]
            server.run("ip", "route", "add", sub4, "via", r4.split("/")[0])
            server.run("ip", "-6", "route", "add", sub6, "via", r6.split("/")[0])
        return cls(node, routers, server)

    # -- faults, from the router side ----------------------------------------------------------

    def cut(self, member: str, *, down: bool = True) -> None:
        """Pull the cable: the router's port goes down, the member loses carrier."""
        self.routers[member].run("ip", "link", "set", f"r{member}", "down" if down else "up")

    def block(self, member: str, *, blocked: bool = True) -> None:
        """Gray failure: the router's bridge port drops every frame; carrier stays up."""
        state = "0" if blocked else "3"
        self.routers[member].run("bridge", "link", "set", "dev", f"r{member}", "state", state)

    def blackhole(self, member: str, *, on: bool = True) -> None:
        """The router silently drops what it would route to the server (v4 and v6); it
        still answers for itself (ARP, NS, pings to the router)."""
        verb = "add" if on else "del"
        router = self.routers[member]
        for family, address in (("-4", SERVER_V4), ("-6", SERVER_V6)):
            router.run("ip", family, "rule", verb, "to", address, "blackhole", "priority", "100")

    # -- witnesses ------------------------------------------------------------------------

    def route_get(self, address: str = SERVER_V4) -> dict:
        """``ip -j route get ADDRESS`` in the node: the device the kernel would use now."""
        family = "-6" if ":" in address else "-4"
        return self.node.json("ip", "-j", family, "route", "get", address)[0]

    def device_for(self, address: str = SERVER_V4) -> str | None:
        family = "-6" if ":" in address else "-4"
        proc = self.node.run("ip", "-j", family, "route", "get", address, check=False)
        if proc.returncode != 0:
            return None
        return self.route_get(address)["dev"]
