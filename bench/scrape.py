"""bench/scrape: /metrics of nodenetd against node_exporter on the same 1000 veths, same run.

A namespace holds N veths (their peers in a second namespace, up, so they have carrier) that
a profile tunes (MTU, txqueuelen, one offload: 3 managed settings per interface). In it run
nodenetd (metrics on its default 127.0.0.1:10037) and node_exporter by hand on another port
(``prometheus-node-exporter --collector.disable-defaults --collector.netdev
--collector.netclass --web.disable-exporter-metrics``: only those two collectors, none of its
own go_/promhttp_ series; the Debian package's service is not used), and a second one with
``--collector.netclass.netlink`` (netclass from rtnetlink instead of sysfs; off by default).
Scrapes go to each in turn, one at a time over a kept-alive connection as Prometheus does,
``--interval`` apart, uncompressed (gzip sizes are printed too): latency from sending the
request to the last byte, p50/p99, bytes and series per scrape, CPU per scrape, and the RSS of
each process before and after the scrapes.

Target: nodenetd's p50 at or below node_exporter's (the default one). Reported as met or
missed, never asserted.

    .venv/bin/python -m bench.scrape [--interfaces 1000] [--scrapes 50] [--interval 0.2]
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.apply_scale import machine
from bench.daemon import cpu_seconds, create_veths, percentile, rss_mib
from nodenetd.config.metrics import DEFAULT_PORT
from nodenetd.kernel.netlink import in_netns
from tests.lab.netns import REPO, Netns

NODE_EXPORTER_PORT = 9100  # inside the bench namespace: its loopback is its own
BASELINE = "node_exporter"
VARIANT = "node_exporter, netclass.netlink"
PROFILE = """\
interfaces:
  - match: {name: ["s*"]}
    mtu: 1500
    txqueuelen: 2000
    features: {gro: true}
"""


def start_nodenetd(ns: Netns, root: Path) -> subprocess.Popen:
    (root / "profiles").mkdir(exist_ok=True)
    (root / "profiles" / "bench.yaml").write_text(PROFILE)
    config = root / "nodenetd.yaml"
    config.write_text(f"profiles: [bench]\nprofile_dirs: [{root / 'profiles'}]\n"
                      f"state_dir: {root / 'state'}\n"
                      f"daemon: {{control_socket: {root / 'ctl.sock'}, log_level: warning}}\n")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(root / "notify.sock"))
    notify.settimeout(300)
    env = {**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": str(root / "notify.sock")}
    proc = subprocess.Popen(ns.python_argv("nodenetd.daemon.main", "--config", str(config)),
                            env=env, stderr=subprocess.DEVNULL)
    try:
        while b"READY=1" not in notify.recv(4096):
            pass
    finally:
        notify.close()
    return proc


def start_node_exporter(ns: Netns, port: int, *extra: str) -> subprocess.Popen:
    binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if binary is None:
        raise SystemExit("node_exporter is missing: apt-get install prometheus-node-exporter")
    return subprocess.Popen(ns.exec_argv(
        binary, f"--web.listen-address=127.0.0.1:{port}",
        "--collector.disable-defaults", "--collector.netdev", "--collector.netclass",
        "--web.disable-exporter-metrics", "--log.level=error", *extra),
        stderr=subprocess.DEVNULL)


def node_exporter_version() -> str:
    binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    proc = subprocess.run([binary or "false", "--version"], capture_output=True, text=True,
                          timeout=30, check=False)
    words = (proc.stdout + proc.stderr).split()
    return words[2].rstrip(",") if len(words) > 2 else "?"


class Client:
    """One kept-alive HTTP connection into the namespace."""

    def __init__(self, ns: Netns, port: int) -> None:
        self.ns, self.port = ns, port
        self.conn: http.client.HTTPConnection | None = None

    reconnects = 0

    def get(self, encoding: str = "identity") -> tuple[float, bytes, int]:
        """(seconds from request to last byte, body, status). A kept-alive connection the
        server closed is opened again (as Prometheus does), and counted."""
        for attempt in (1, 2):
            if self.conn is None:
                sock = in_netns(self.ns.name, lambda: socket.create_connection(
                    ("127.0.0.1", self.port), timeout=60))
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                self.conn.sock = sock
            start = time.perf_counter()
            try:
                self.conn.request("GET", "/metrics", headers={"Accept-Encoding": encoding})
                response = self.conn.getresponse()
                body = response.read()
            except (http.client.RemoteDisconnected, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                self.reconnects += 1
                continue
            return time.perf_counter() - start, body, response.status
        raise AssertionError("unreachable")

    def wait(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.get()[2] == 200:
                    return
            except OSError:
                self.conn = None
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing answers on port {self.port} in {self.ns.name}")
            time.sleep(0.2)


def series(body: bytes) -> int:
    return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


def interfaces_in(body: bytes, metric: bytes) -> int:
    return sum(1 for line in body.splitlines() if line.startswith(metric + b"{"))


def promtool_findings(body: bytes) -> str:
    if shutil.which("promtool") is None:
        return "promtool missing"
    proc = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                          timeout=120)
    text = (proc.stdout + proc.stderr).decode().strip()
    return "none" if proc.returncode == 0 and not text else text[:200]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interfaces", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.2,
                        help="seconds between two scrapes of the same exporter")
    parser.add_argument("--no-netlink-variant", action="store_true",
                        help="leave out node_exporter with --collector.netclass.netlink")
    args = parser.parse_args()

    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    node, peer = Netns.create("snode"), Netns.create("speer")
    tmp = tempfile.TemporaryDirectory(prefix="nodenetd-bench-scrape-")
    procs: list[subprocess.Popen] = []
    try:
        create_veths(node, peer, "s", args.interfaces, None)
        for ns, prefix in ((node, "s"), (peer, "sp")):
            batch = "".join(f"link set {prefix}{i} up\n" for i in range(args.interfaces))
            subprocess.run(["ip", "-n", ns.name, "-batch", "-"], input=batch, text=True,
                           check=True, timeout=300)
        ours = start_nodenetd(node, Path(tmp.name))
        procs.append(ours)
        time.sleep(2)  # let the daemon settle after its start-up applies
        rss_ready = rss_mib(ours.pid)  # before any scrape
        theirs = start_node_exporter(node, NODE_EXPORTER_PORT)
        procs.append(theirs)
        clients = {"nodenetd": Client(node, DEFAULT_PORT),
                   BASELINE: Client(node, NODE_EXPORTER_PORT)}
        pids = {"nodenetd": ours.pid, BASELINE: theirs.pid}
        if not args.no_netlink_variant:
            variant = start_node_exporter(node, NODE_EXPORTER_PORT + 1,
                                          "--collector.netclass.netlink")
            procs.append(variant)
            clients[VARIANT] = Client(node, NODE_EXPORTER_PORT + 1)
            pids[VARIANT] = variant.pid
        for client in clients.values():
            client.wait()
        rss_before = {name: rss_mib(pid) for name, pid in pids.items()}
        for client in clients.values():  # warm-up: caches, connections, page cache
            for _ in range(3):
                client.get()
        latencies: dict[str, list[float]] = {name: [] for name in clients}
        sizes: dict[str, int] = {}
        bodies: dict[str, bytes] = {}
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        for round_ in range(args.scrapes):
            order = list(clients)[round_ % len(clients):] + list(clients)[:round_ % len(clients)]
            for name in order:
                seconds, body, status = clients[name].get()
                assert status == 200, (name, status)
                latencies[name].append(seconds)
                sizes[name], bodies[name] = len(body), body
            time.sleep(args.interval)
        cpu = {name: (cpu_seconds(pid) - cpu0[name]) / args.scrapes
               for name, pid in pids.items()}
        rss_after = {name: rss_mib(pid) for name, pid in pids.items()}
        gzipped = {name: len(client.get("gzip")[1]) for name, client in clients.items()}
        findings = promtool_findings(bodies["nodenetd"])
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        node.delete()
        peer.delete()
        tmp.cleanup()

    print(f"\nbench/scrape on {machine()}, node_exporter {node_exporter_version()}")
    print(f"{args.interfaces} veths (up, carrier), tuned by nodenetd; {args.scrapes} scrapes "
          f"of each, in turn, {args.interval:g} s apart, uncompressed, kept-alive; "
          f"load average before: {load_before}\n")
    print("| exporter | p50 ms | p99 ms | max ms | bytes | gzip bytes | series "
          "| interfaces | CPU ms/scrape | RSS MiB before | RSS MiB after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in clients:
        values = [s * 1000 for s in latencies[name]]
        body = bodies[name]
        count = interfaces_in(body, b"nodenetd_interface_mtu_bytes" if name == "nodenetd"
                              else b"node_network_receive_bytes_total")
        print(f"| {name} | {percentile(values, 50):.1f} | {percentile(values, 99):.1f} | "
              f"{max(values):.1f} | {sizes[name]} | {gzipped[name]} | {series(body)} | "
              f"{count} | {cpu[name] * 1000:.1f} | {rss_before[name]:.0f} | "
              f"{rss_after[name]:.0f} |")
    ours_p50 = percentile(latencies["nodenetd"], 50)
    theirs_p50 = percentile(latencies[BASELINE], 50)
    print()
    for name in [n for n in clients if n != "nodenetd"]:
        p50 = percentile(latencies[name], 50) / ours_p50
        p99 = percentile(latencies[name], 99) / percentile(latencies["nodenetd"], 99)
        print(f"ratio {name} / nodenetd: p50 {p50:.1f}x, p99 {p99:.1f}x, "
              f"CPU per scrape {cpu[name] / max(cpu['nodenetd'], 1e-6):.1f}x")
    print(f"nodenetd RSS at READY with {args.interfaces} interfaces, before any scrape: "
          f"{rss_ready:.0f} MiB")
    print(f"promtool check metrics findings on nodenetd's scrape: {findings}")
    reconnects = {name: c.reconnects for name, c in clients.items() if c.reconnects}
    if reconnects:
        print(f"kept-alive connections the server closed (reopened, not timed): {reconnects}")
    ok = ours_p50 <= theirs_p50
    print(f"target {'met' if ok else 'MISSED'}: nodenetd p50 at or below node_exporter's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
