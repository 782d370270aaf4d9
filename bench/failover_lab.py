"""bench/failover's lab: the namespaces, the traffic, the cuts and the systems under test.

Shared by the host half (bench/failover) and the kernel-lab VM half (bench/failover_vm);
stdlib only at import time, so the VM (Python under TCG emulation) starts it quickly.

Two topologies, all addresses from documentation ranges:

Route lab (host), two uplinks to two routers, a server behind both::

    node  a0 192.0.2.2/24 ------ [ra0] br0 192.0.2.1    router A  sa 203.0.113.65/30 --+
          b0 198.51.100.2/24 --- [rb0] br0 198.51.100.1 router B  sb 203.0.113.69/30 -+ |
    server  lo 203.0.113.10/32, ua 203.0.113.66/30, ub 203.0.113.70/30 <---------------+-+
            (192.0.2.0/24 via A, 198.51.100.0/24 via B)

Bond lab (VM), an active-backup bond whose members reach one router's bridge::

    node  bond0 192.0.2.2/24 over eth0, eth1 --- [p0, p1] br0 192.0.2.1 router
    router s0 203.0.113.65/30 --- u0 203.0.113.66/30, lo 203.0.113.10/32 server

The measured stream goes node -> server, through the router(s): its datagrams never depend
on the reverse path, which the cut also breaks (iperf3's idle TCP control connection rides
it out: every cut is restored before the stream ends). The receiver-side witness
(bench/failover_sniff) runs where it sees which path each datagram took: on the server's two
links in the route lab, on the router's two bridge ports in the bond lab.

Cuts, on the router side of the active member, as a dead cable, switch port or upstream would:
carrier loss is ``ip link set PORT down`` (the node's veth loses carrier); a gray failure is
``bridge link set dev PORT state 0`` (the port drops every frame both ways, carrier stays up).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.failover_stats import datagram_bitrate, stream_loss, switches
from nodenetd.kernel.netlink import in_netns
from tests.lab.netns import REPO, LabError, Netns

PORT = 5201
SERVER = "203.0.113.10"
LENGTH = 64  # bytes of iperf3 payload per datagram: "small datagrams"
PYTHON = str(REPO / ".venv" / "bin" / "python")


def prompt_bench() -> None:
    """Run the bench itself SCHED_FIFO so that a cut happens when it is stamped, also on a
    loaded machine; SCHED_RESET_ON_FORK keeps everything it starts (the daemon under test,
    ip, the witness) at the normal policy."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(20))
    except (OSError, AttributeError) as exc:
        say(f"the bench runs without real-time priority ({exc}): cut times are less exact")


def say(message: str) -> None:
    print(f"failover: {message}", file=sys.stderr, flush=True)


def now_ns() -> int:
    return time.time_ns()  # CLOCK_REALTIME: the clock of the sniffer's kernel timestamps


# -- measurements ---------------------------------------------------------------------------


@dataclass
class Sample:
    """What one event (a failover at a cut, a failback after the mend, or nothing: a control
    stream) cost a stream. Times in ms."""

    kind: str  # failover | failback | control
    outage_ms: float
    lost_ms: float
    gap_ms: float
    longest_gap_ms: float
    lost: int
    iperf_lost: int | None  # iperf3's count for the whole stream (its server's socket too)
    rate: float  # the stream's actual send rate, datagrams/s
    moved_ms: float | None = None  # traffic reached the other path, ms after cut/mend
    note: str = ""  # why this sample does not count (empty: it counts)
    delay_ms: float | None = None  # median queueing on the way (one-way delay over its minimum)
    delay_max_ms: float | None = None  # the stream's largest

    @property
    def valid(self) -> bool:
        return not self.note


@dataclass
class Traffic:
    """An iperf3 server and the receiver-side witness; one iperf3 UDP stream at a time."""

    client: Netns
    server: Netns
    witness: Netns
    delivery: list[str]  # where the witness sees datagrams get through ("NAME[:out]")
    rate: float
    workdir: Path
    pacing_us: int = 100
    startup_timeout: float = 10.0
    realtime: bool = True  # the traffic generator runs SCHED_FIFO: its own stalls are not outage
    paths: list[str] | None = None  # where it sees which path carried them (default: delivery)
    timed: bool = False  # streams end by time (-t), not by count (-k): a slow sender that
    # catches up in bursts (the emulated VM) cannot end the stream before the cut is mended
    _iperf: subprocess.Popen | None = None
    _sniff: subprocess.Popen | None = None
    _dumps: int = 0

    def start(self) -> None:
        chrt = ["chrt", "-f", "10"] if self.realtime else []
        self._iperf = subprocess.Popen(
            self.server.exec_argv(*chrt, "iperf3", "-s", "-B", SERVER, "-J", "-i", "0"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self._sniff = subprocess.Popen(
            self.witness.exec_argv(PYTHON, "-m", "bench.failover_sniff", str(PORT),
                                   *self.delivery, *(self.paths or [])),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
        if self._ask(None) != "ready":
            raise LabError("the sniffer did not start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the iperf3 server listens
            probe = self.server.run("ss", "-Hltn", f"sport = :{PORT}", check=False)
            if str(PORT) in probe.stdout:
                return
            time.sleep(0.05)
        raise LabError("the iperf3 server did not start")

    def close(self) -> None:
        for proc in (self._sniff, self._iperf):
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def _ask(self, command: str | None) -> str:
        assert self._sniff is not None and self._sniff.stdin and self._sniff.stdout
        if command is not None:
            self._sniff.stdin.write(command + "\n")
            self._sniff.stdin.flush()
        return self._sniff.stdout.readline().strip()

    def capacity(self, seconds: int = 2) -> float:
        """Datagrams/s the client sends with no rate limit (iperf3 -b 0): what this machine
        can generate at all, a bound for the rate of the real streams."""
        chrt = ["chrt", "-f", "10"] if self.realtime else []
        proc = self.client.run(*chrt, "iperf3", "-c", SERVER, "-u", "-l", str(LENGTH),
                               "-b", "0", "-t", str(seconds), "-J", check=False,
                               timeout=seconds * 10 + 60)
        try:
            total = json.loads(proc.stdout)["end"]["sum"]
            return total["packets"] / total["seconds"]
        except (ValueError, KeyError, ZeroDivisionError):
            return 0.0

    def _combine(self, dump: dict) -> dict:
        """The witness's records -> delivered datagrams (t, seq) and each one's path."""
        names = [spec.partition(":")[0] for spec in self.delivery + (self.paths or [])]
        delivered = len(self.delivery)
        via: dict[int, int] = {}
        t, seq, path, delay = [], [], [], []
        for at, number, index, sent in zip(dump["t"], dump["seq"], dump["at"], dump["sent"],
                                           strict=True):
            if index >= delivered:
                via.setdefault(number, index - delivered)
            else:
                t.append(at)
                seq.append(number)
                path.append(index)
                delay.append(at - sent)
        if self.paths:
            previous = 0
            for k, number in enumerate(seq):
                previous = path[k] = via.get(number, previous)
            return {"t": t, "seq": seq, "path": path, "ifaces": list(self.paths),
                    "delay": delay}
        return {"t": t, "seq": seq, "path": path, "ifaces": names[:delivered], "delay": delay}

    def stream(self, seconds: float, script: Callable[[int], dict[str, int]]) -> dict:
        """One stream of ``seconds`` at ``rate``; ``script(first_ns)`` runs once datagrams
        arrive (it makes the cut) and returns its event times. The raw observations."""
        packets = round(seconds * self.rate)
        # timed: 2 s of slack for a late start (a slow witness reports the first datagram late)
        length = ["-t", str(math.ceil(seconds) + 2)] if self.timed else ["-k", str(packets)]
        self._ask("reset")
        chrt = ["chrt", "-f", "10"] if self.realtime else []
        argv = self.client.exec_argv(
            *chrt, "iperf3", "-c", SERVER, "-u", "-l", str(LENGTH),
            "-b", str(datagram_bitrate(self.rate, LENGTH)), *length,
            "--pacing-timer", str(self.pacing_us), "-J", "--get-server-output")
        client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + self.startup_timeout
            while int(self._ask("count") or 0) == 0:
                if client.poll() is not None or time.monotonic() > deadline:
                    client.kill()
                    out, err = client.communicate()
                    raise LabError(f"no datagrams arrived; iperf3: {(err + out)[-500:]}")
                time.sleep(0.002)
            events = script(now_ns())
            out, err = client.communicate(timeout=seconds * 4 + 60)
        finally:
            if client.poll() is None:
                os.killpg(client.pid, signal.SIGKILL)
                client.wait()
        self._dumps += 1
        path = self.workdir / f"stream-{self._dumps}.json"
        self._ask(f"dump {path}")
        seen = self._combine(json.loads(path.read_text()))
        path.unlink()
        try:
            report = json.loads(out)
        except ValueError:
            report = {"error": f"iperf3 printed no JSON: {err.strip()[:200]}"}
        return {"seen": seen, "iperf": report, "events": events}


MS = 1_000_000  # ns


def evaluate(raw: dict, rate: float, preferred: str, threshold_ms: float = 1.0) -> list[Sample]:
    """A stream's raw observations -> its samples: [control], or [failover, failback].

    Each event is charged what happens in its own time: the failover the datagrams lost
    from 2 ms before the cut to the mend, and the receive silences that begin from then
    until 50 ms after traffic reached the other path (the mend, if it never did); the
    failback the datagrams lost after the mend, and the silences from the last datagram on
    the backup path to 50 ms after traffic is back on ``preferred`` (which it must reach if
    it had moved away). Silences are kept to these short windows because a loaded host
    adds millisecond hiccups anywhere in a stream; losses are exact, so they count over
    the whole span. A control stream is charged a 100 ms window at the cut's place."""
    seen, report, events = raw["seen"], raw["iperf"], raw["events"]
    times, seqs, names, paths = seen["t"], seen["seq"], seen["ifaces"], seen["path"]
    iperf_lost, sent, seconds, note = None, 0, 0.0, ""
    if "error" in report:
        note = str(report["error"])
    else:
        total = report["end"]["sum"]
        sent, seconds = total.get("packets", 0), total.get("seconds", 0.0)
        server = report.get("server_output_json", {}).get("end", {}).get("sum", {})
        iperf_lost = server.get("lost_packets", total.get("lost_packets"))
    if not times:
        note = note or "no datagram arrived"
    first = min(times) if times else 0
    end_ns = first + round(seconds * 1e9) if seconds else None
    actual = sent / seconds if seconds else 0.0
    if actual > 0:
        rate = actual  # lost ÷ the rate the sender really kept (the VM may not keep up)
    # iperf3 stamps datagrams with CLOCK_MONOTONIC, the witness with CLOCK_REALTIME: the
    # offset is constant, so delay minus the stream's smallest is the queueing on the way
    delay = sorted(seen.get("delay") or [0])
    delays = ((delay[len(delay) // 2] - delay[0]) / MS, (delay[-1] - delay[0]) / MS)

    def charge(kind: str, window: tuple[int, int], lost_window: tuple[int, int],
               moved: float | None = None, why: str = "") -> Sample:
        loss = stream_loss(times, seqs, rate, threshold_ms=threshold_ms, end_ns=end_ns,
                           window=window, lost_window=lost_window)
        return Sample(kind, loss.outage_ms, loss.lost_ms, loss.gap_ms, loss.longest_gap_ms,
                      loss.lost, iperf_lost, actual, moved, why or note, *delays)

    if "cut" not in events:
        start = first + events["pre"]
        return [charge("control", (start, start + 100 * MS), (start, start + 100 * MS))]
    cut, mend = events["cut"], events["restore"]
    end = end_ns or mend
    if times and not min(times) < cut < mend < max(times):
        first_ns, last_ns = min(times), max(times)
        note = note or (f"the cut was not inside the stream: datagrams from 0 to "
                        f"{(last_ns - first_ns) / MS:.0f} ms, cut at {(cut - first_ns) / MS:.0f} "
                        f"ms, mended at {(mend - first_ns) / MS:.0f} ms (the sender too slow?)")
    if events.get("cut_done", cut) - cut > 50 * MS:
        note = note or f"the cut took {(events['cut_done'] - cut) / MS:.0f} ms to make"
    moves = [(at, names[a], names[b]) for at, a, b in switches(times, paths)]
    away = next((at for at, _a, b in moves if at >= cut and b != preferred), None)
    back = next((at for at, _a, b in moves if away and at > away and b == preferred), None)
    failover = charge("failover", (cut - 2 * MS, away + 50 * MS if away else mend),
                      (cut - 2 * MS, mend), (away - cut) / MS if away else None)
    if away is None:
        return [failover, charge("failback", (mend, end), (mend, end), None,
                                 "never failed over")]
    if back is None:
        return [failover, charge("failback", (mend, end), (mend, end), None,
                                 f"traffic never moved back to {preferred} during the stream")]
    before = [t for t, p in zip(times, paths, strict=True) if t < back and names[p] != preferred]
    start = min(max(before, default=back), back - 50 * MS)
    return [failover, charge("failback", (start, back + 50 * MS), (mend, end),
                             (back - mend) / MS)]


def sample_dict(sample: Sample) -> dict:
    return asdict(sample)


@dataclass
class Campaign:
    """Repeated cuts of one kind against one system: each a fresh stream, the system settled
    before it. ``settle`` raises LabError when the system does not come back."""

    traffic: Traffic
    cut: Cut
    preferred: str  # the path (witness interface) traffic takes when all is well
    settle: Callable[[], None]
    pre: float = 0.3
    hold: float = 0.5
    tail: float = 1.0  # stream after the mend: covers the failback
    threshold_ms: float = 1.0
    max_failures: int | None = None  # unusable streams tolerated (default: 3 or a fifth)
    rejected: int = 0  # unusable streams in the last run
    deadline: float | None = None  # time.monotonic() after which no new cut starts
    truncated: bool = False  # the last run stopped at the deadline

    def run(self, cuts: int, label: str) -> list[list[Sample]]:
        try:
            return self._run(cuts, label)
        finally:
            self.cut.close()

    def _run(self, cuts: int, label: str) -> list[list[Sample]]:
        self.cut.mend()  # opens its netlink socket now, not during the first stream
        done: list[list[Sample]] = []
        failures = 0
        tolerated = self.max_failures if self.max_failures is not None else max(3, cuts // 5)
        while len(done) < cuts:
            if self.deadline is not None and time.monotonic() > self.deadline:
                self.truncated = True
                say(f"{label}: out of time after {len(done)} cuts")
                break
            self.settle()
            try:
                raw = self.traffic.stream(self.pre + self.hold + self.tail,
                                          cut_script(self.cut, self.pre, self.hold))
            except LabError as exc:
                failures += 1
                say(f"{label}: stream failed ({exc}); {failures} so far")
                if failures > tolerated:
                    raise
                continue
            samples = evaluate(raw, self.traffic.rate, self.preferred, self.threshold_ms)
            if not samples[0].valid:
                failures += 1
                say(f"{label}: stream not usable: {samples[0].note}")
                if failures > tolerated:
                    raise LabError(f"{label}: too many unusable streams: {samples[0].note}")
                continue
            done.append(samples)
            self.rejected = failures
            over, back = samples
            moved = "never" if over.moved_ms is None else f"{over.moved_ms:.1f} ms"
            again = back.note or (f"outage {back.outage_ms:.1f} ms (lost {back.lost}), moved "
                                  f"back {back.moved_ms:.0f} ms after the mend")
            say(f"{label} {len(done)}/{cuts}: failover outage {over.outage_ms:.1f} ms "
                f"(lost {over.lost}, gap {over.gap_ms:.1f} ms, traffic moved after {moved}); "
                f"failback: {again}")
        return done

    def controls(self, count: int, label: str) -> list[Sample]:
        out = []
        for _ in range(count):
            self.settle()
            raw = self.traffic.stream(self.pre + self.hold + self.tail,
                                      idle_script(self.pre, self.hold))
            out.append(evaluate(raw, self.traffic.rate, self.preferred, self.threshold_ms)[0])
        say(f"{label} control streams (no cut): outage "
            + ", ".join(f"{s.outage_ms:.1f}" for s in out) + " ms")
        return out


def gap_threshold_ms(rate: float, pacing_us: int) -> float:
    """Silences shorter than this are pacing, not outage: 1 ms, or two pacing ticks, or
    three datagram spacings, whichever is longest."""
    return max(1.0, 2 * pacing_us / 1000, 3000 / rate)


# -- cuts -----------------------------------------------------------------------------------


class Rtnl:
    """A raw rtnetlink socket inside one namespace: a cut is one netlink request, its time
    known to the microsecond (an ``ip`` process would take 5-50 ms to start, more in the VM)."""

    RTM_NEWLINK, RTM_SETLINK, NLMSG_ERROR = 16, 19, 2
    NLM_F_REQUEST_ACK = 0x1 | 0x4
    IFF_UP = 0x1
    IFLA_PROTINFO, IFLA_BRPORT_STATE, NLA_F_NESTED = 12, 1, 0x8000
    AF_BRIDGE = 7

    def __init__(self, ns: Netns) -> None:
        self.sock = in_netns(ns.name, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
        self.sock.bind((0, 0))
        self.seq = 0
        self.ns = ns

    def _request(self, kind: int, family: int, index: int, flags: int, change: int,
                 attrs: bytes = b"") -> None:
        self.seq += 1
        body = struct.pack("BxHiII", family, 0, index, flags, change) + attrs
        header = struct.pack("IHHII", 16 + len(body), kind, self.NLM_F_REQUEST_ACK, self.seq, 0)
        self.sock.send(header + body)
        while True:
            reply = self.sock.recv(65536)
            _length, rtype, _f, seq, _pid = struct.unpack_from("IHHII", reply)
            if rtype == self.NLMSG_ERROR and seq == self.seq:
                (error,) = struct.unpack_from("i", reply, 16)
                if error:
                    raise LabError(f"rtnetlink in {self.ns.name}: {os.strerror(-error)}")
                return

    def set_up(self, index: int, up: bool) -> None:
        self._request(self.RTM_NEWLINK, 0, index, self.IFF_UP if up else 0, self.IFF_UP)

    def set_port_state(self, index: int, state: int) -> None:
        """``bridge link set dev PORT state STATE`` (0 disabled, 3 forwarding)."""
        inner = struct.pack("HHBxxx", 5, self.IFLA_BRPORT_STATE, state)
        attrs = struct.pack("HH", 4 + len(inner), self.IFLA_PROTINFO | self.NLA_F_NESTED) + inner
        self._request(self.RTM_SETLINK, self.AF_BRIDGE, index, 0, 0, attrs)

    def close(self) -> None:
        self.sock.close()


@dataclass
class Cut:
    """How a path is broken and mended, on the router side of one node member."""

    kind: str  # carrier | gray
    router: Netns
    port: str
    _rtnl: Rtnl | None = None
    _index: int = 0

    def _link(self) -> tuple[Rtnl, int]:
        if self._rtnl is None:
            self._index = self.router.link(self.port)["ifindex"]
            self._rtnl = Rtnl(self.router)
        return self._rtnl, self._index

    def make(self) -> None:
        rtnl, index = self._link()
        if self.kind == "carrier":
            rtnl.set_up(index, False)
        else:
            rtnl.set_port_state(index, 0)

    def mend(self) -> None:
        rtnl, index = self._link()
        if self.kind == "carrier":
            rtnl.set_up(index, True)
        else:
            rtnl.set_port_state(index, 3)

    def close(self) -> None:
        if self._rtnl is not None:
            self._rtnl.close()
            self._rtnl = None


def cut_script(cut: Cut, pre: float, hold: float) -> Callable[[int], dict[str, int]]:
    """The in-stream script: ``pre`` s of clean stream, the cut, ``hold`` s, the mend (the
    mend also when something fails in between)."""

    def script(first_ns: int) -> dict[str, int]:
        time.sleep(pre)
        events = {"cut": now_ns()}
        try:
            cut.make()
            events["cut_done"] = now_ns()
            time.sleep(hold)
        finally:
            events["restore"] = now_ns()
            cut.mend()
            events["restore_done"] = now_ns()
        return events

    return script


def idle_script(pre: float, span: float) -> Callable[[int], dict[str, int]]:
    def script(first_ns: int) -> dict[str, int]:
        return {"pre": round(pre * 1e9), "span": round(span * 1e9)}

    return script


# -- topologies -----------------------------------------------------------------------------


def _router_basics(ns: Netns) -> None:
    ns.run("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
           "net.ipv4.conf.default.rp_filter=0")


def _bridge(ns: Netns, ports: list[str], address: str) -> None:
    ns.run("ip", "link", "add", "name", "br0", "type", "bridge", "stp_state", "0",
           "forward_delay", "0")
    for port in ports:
        ns.run("ip", "link", "set", "dev", port, "master", "br0")
    ns.run("ip", "link", "set", "dev", "br0", "up")
    ns.run("ip", "addr", "add", address, "dev", "br0")


@dataclass
class Lab:
    """Namespaces by role; ``delete`` removes all of them (idempotent)."""

    spaces: dict[str, Netns]

    def __getitem__(self, role: str) -> Netns:
        return self.spaces[role]

    def delete(self) -> None:
        for ns in self.spaces.values():
            ns.delete()


def route_lab() -> Lab:
    lab = Lab({})
    try:
        for role in ("node", "ra", "rb", "server"):
            lab.spaces[role] = Netns.create(f"bfo-{role}")
        node, server = lab["node"], lab["server"]
        for ns in (node, server):
            ns.run("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0",
                   "net.ipv4.conf.default.rp_filter=0")
        plan = {"a": ("192.0.2", "203.0.113.64"), "b": ("198.51.100", "203.0.113.68")}
        for side, (net, link) in plan.items():
            router = lab[f"r{side}"]
            _router_basics(router)
            node.veth(f"{side}0", f"r{side}0", peer_ns=router)
            _bridge(router, [f"r{side}0"], f"{net}.1/24")
            node.run("ip", "addr", "add", f"{net}.2/24", "dev", f"{side}0")
            base = int(link.rsplit(".", 1)[1])
            prefix = link.rsplit(".", 1)[0]
            router.veth(f"s{side}", f"u{side}", peer_ns=server)
            router.run("ip", "addr", "add", f"{prefix}.{base + 1}/30", "dev", f"s{side}")
            server.run("ip", "addr", "add", f"{prefix}.{base + 2}/30", "dev", f"u{side}")
            router.run("ip", "route", "add", f"{SERVER}/32", "via", f"{prefix}.{base + 2}")
            server.run("ip", "route", "add", f"{net}.0/24", "via", f"{prefix}.{base + 1}")
        server.run("ip", "addr", "add", f"{SERVER}/32", "dev", "lo")
    except BaseException:
        lab.delete()
        raise
    return lab


def bond_lab() -> Lab:
    """The namespaces and wires; the bond itself is made by the system under test."""
    lab = Lab({})
    try:
        for role in ("node", "router", "server"):
            lab.spaces[role] = Netns.create(f"bfo-{role}")
        node, router, server = lab["node"], lab["router"], lab["server"]
        node.run("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")
        _router_basics(router)
        for i in (0, 1):
            node.veth(f"eth{i}", f"p{i}", peer_ns=router, up=False)
            router.run("ip", "link", "set", "dev", f"p{i}", "up")
        _bridge(router, ["p0", "p1"], "192.0.2.1/24")
        router.veth("s0", "u0", peer_ns=server)
        router.run("ip", "addr", "add", "203.0.113.65/30", "dev", "s0")
        server.run("ip", "addr", "add", "203.0.113.66/30", "dev", "u0")
        server.run("ip", "addr", "add", f"{SERVER}/32", "dev", "lo")
        router.run("ip", "route", "add", f"{SERVER}/32", "via", "203.0.113.66")
        server.run("ip", "route", "add", "192.0.2.0/24", "via", "203.0.113.65")
    except BaseException:
        lab.delete()
        raise
    return lab


def kernel_bond(lab: Lab, options: list[str]) -> None:
    """The baseline: an active-backup bond made with iproute2, eth0 its primary."""
    node = lab["node"]
    node.run("ip", "link", "add", "bond0", "type", "bond", "mode", "active-backup", *options)
    for member in ("eth0", "eth1"):
        node.run("ip", "link", "set", "dev", member, "down")
        node.run("ip", "link", "set", "dev", member, "master", "bond0")
    node.run("ip", "link", "set", "dev", "bond0", "type", "bond", "primary", "eth0")
    node.run("ip", "link", "set", "dev", "bond0", "up")
    bond_address(lab)


def bond_address(lab: Lab) -> None:
    node = lab["node"]
    node.run("ip", "addr", "add", "192.0.2.2/24", "dev", "bond0")
    node.run("ip", "route", "add", "default", "via", "192.0.2.1")


def bond_state(node: Netns) -> tuple[str | None, dict[str, str]]:
    """(active member, {member: mii_status}) from ``ip -j -d link``."""
    links = node.json("ip", "-j", "-d", "link", "show")
    active, members = None, {}
    for link in links:
        info = link.get("linkinfo", {})
        if link["ifname"] == "bond0":
            active = info.get("info_data", {}).get("active_slave")
        elif link.get("master") == "bond0":
            members[link["ifname"]] = info.get("info_slave_data", {}).get("mii_status", "?")
    return active, members


def default_routes(node: Netns) -> dict[str, int]:
    """{device: its best metric} of the node's usable IPv4 default routes (main table)."""
    best: dict[str, int] = {}
    for route in node.json("ip", "-j", "-4", "route", "show", "default"):
        if "linkdown" in route.get("flags", []):
            continue
        metric = route.get("metric", 0)
        best[route["dev"]] = min(metric, best.get(route["dev"], metric))
    return best


def preferred_route(node: Netns) -> str | None:
    """The device the node's IPv4 default traffic leaves by (lowest metric)."""
    routes = default_routes(node)
    return min(routes, key=routes.__getitem__) if routes else None


def wait_until(what: str, check: Callable[[], object], timeout: float,
               interval: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# -- nodenetd -------------------------------------------------------------------------------


ROUTE_GROUP = """\
profiles: [failover-bench]
profile_dirs: [{root}/profiles]
state_dir: {root}/state
daemon: {{control_socket: {root}/ctl.sock}}
failover:
  groups:
    - name: uplinks
      type: route
      routes: [default]
      metric: 50
      failback: preempt
      preempt_delay: {preempt_delay}
      damping: false             # the bench cuts one member every few seconds, on purpose
      interval: {interval}
      rise: 3
      fall: 3
      combine: any
      notify: {{count: 3, interval: 0.2}}
      members:
        - interface: a0
          priority: 100
          gateway: 192.0.2.1
          probes: [{{icmp: 203.0.113.10}}, {{arp: 192.0.2.1}}]
        - interface: b0
          priority: 50
          gateway: 198.51.100.1
          probes: [{{icmp: 203.0.113.10}}, {{arp: 198.51.100.1}}]
"""

BOND_GROUP = """\
profiles: [failover-bench]
profile_dirs: [{root}/profiles]
state_dir: {root}/state
daemon: {{control_socket: {root}/ctl.sock}}
failover:
  groups:
    - name: bond0
      type: bond
      bond: bond0
      failback: preempt
      preempt_delay: {preempt_delay}
      damping: false
      interval: {interval}
      rise: 3
      fall: 3
      options: {{miimon: 10, updelay: 0, downdelay: 0, num_grat_arp: 1}}
      members:
        - {{interface: eth0, priority: 100, probes: [{{arp: 192.0.2.1}}]}}
        - {{interface: eth1, priority: 50, probes: [{{arp: 192.0.2.1}}]}}
"""


@dataclass
class Daemon:
    """nodenetd in the node namespace, started the way systemd would (NOTIFY_SOCKET)."""

    node: Netns
    root: Path
    proc: subprocess.Popen | None = None
    notify: socket.socket | None = None

    @property
    def config(self) -> Path:
        return self.root / "nodenetd.yaml"

    @property
    def log(self) -> Path:
        return self.root / "nodenetd.log"

    def write(self, template: str, **values: object) -> Path:
        (self.root / "profiles").mkdir(parents=True, exist_ok=True)
        (self.root / "profiles" / "failover-bench.yaml").write_text(
            "description: bench/failover, failover only (no tuning)\n")
        self.config.write_text(template.format(root=self.root, **values))
        return self.config

    def check(self, timeout: float = 120) -> tuple[bool, str]:
        """Does this nodenetd accept the config? (ok, what it said)."""
        proc = self.node.run(PYTHON, "-m", "nodenetd.daemon.main", "--check-config",
                             "--config", str(self.config), check=False, cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=timeout)
        return proc.returncode == 0, (proc.stdout + proc.stderr).strip()

    def start(self, timeout: float = 120, prefix: list[str] | None = None) -> None:
        """Start it and wait for READY=1; ``prefix`` wraps the interpreter (e.g. chrt)."""
        path = self.root / "notify.sock"
        path.unlink(missing_ok=True)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(path))
        env = {**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": str(path)}
        argv = self.node.exec_argv(*(prefix or []), PYTHON, "-m", "nodenetd.daemon.main",
                                   "--config", str(self.config), "--log-level", "info")
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=log, stderr=log,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        self.notify.settimeout(0.2)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(f"nodenetd exited {self.proc.returncode}:\n{self.tail()}")
            try:
                if b"READY=1" in self.notify.recv(4096):
                    return
            except TimeoutError:
                continue
        raise LabError(f"nodenetd not READY within {timeout:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def status(self, timeout: float = 30) -> dict | None:
        """The daemon's failover status: the request ``nodenetctl failover status -o json``
        sends, on the control socket (no interpreter start per query: the VM is slow)."""
        request = {"command": "failover",
                   "args": {"config": str(self.config), "action": "status", "group": None,
                            "member": None, "duration": None}}
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(str(self.root / "ctl.sock"))
                sock.sendall(json.dumps(request).encode() + b"\n")
                raw = b""
                while not raw.endswith(b"\n"):
                    chunk = sock.recv(1 << 16)
                    if not chunk:
                        break
                    raw += chunk
            reply = json.loads(raw)
        except (OSError, ValueError):
            return None
        return reply.get("data") if reply.get("exit_code") == 0 else None

    def group(self, name: str) -> dict | None:
        status = self.status()
        for group in (status or {}).get("groups", []):
            if group.get("name") == name:
                return group
        return None

    def switches(self, name: str) -> int | None:
        """How many times the group has switched its active member so far."""
        group = self.group(name)
        if group is None:
            return None
        return sum(group.get("counters", {}).get("switches", {}).values())

    def quiet_minute(self, name: str, seconds: float) -> dict:
        """CPU (% of one core) and switches over ``seconds`` with no cut and no traffic: any
        switch here is a false failover."""
        before = self.switches(name)
        user, system = self.cpu_percent(seconds)
        after = self.switches(name)
        spurious = None if before is None or after is None else after - before
        return {"cpu_pct": user + system, "cpu_user_pct": user, "cpu_system_pct": system,
                "spurious_switches": spurious}

    def settled(self, name: str, preferred: str) -> bool:
        """The group has ``preferred`` active and every member usable and up."""
        group = self.group(name)
        if not group or group.get("active") != preferred:
            return False
        return all(m.get("usable") and m.get("standing") == "up" for m in group["members"])

    def cpu_percent(self, seconds: float) -> tuple[float, float]:
        """The daemon's user and system CPU over ``seconds``, each as % of one core (psutil,
        all its threads). On veth labs the system share includes the peers' replies: the
        kernel runs the receiving namespace's work in the sender's softirq context."""
        import psutil

        assert self.proc is not None
        process = psutil.Process(self.proc.pid)  # `ip netns exec` execs: this is Python
        before = process.cpu_times()
        started = time.monotonic()
        time.sleep(seconds)
        after = process.cpu_times()
        elapsed = time.monotonic() - started
        return (100 * (after.user - before.user) / elapsed,
                100 * (after.system - before.system) / elapsed)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.notify is not None:
            self.notify.close()
            self.notify = None


def workdir(prefix: str = "nodenetd-failover-") -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=prefix)
