"""The /metrics server and the snapshot hand-over: paths and methods, gzip, basic auth, TLS,
concurrent scrapes, and a scrape that never blocks the event loop (nor waits forever on it).
Servers listen on 127.0.0.1 with a port the kernel picks."""

from __future__ import annotations

import asyncio
import base64
import gzip
import http.client
import itertools
import shutil
import ssl
import subprocess
import threading
import time

import pytest

from nodenetd.config.metrics import MetricsSettings, TlsSettings
from nodenetd.metrics.auth import hash_password
from nodenetd.metrics.exposition import Family
from nodenetd.metrics.http import MetricsServer
from nodenetd.metrics.registry import Registry
from nodenetd.metrics.snapshot import Publisher
from nodenetd.metrics.textfile import TextfileWriter
from nodenetd.metrics.tuning import TuningCollector
from tests.unit.test_metrics_collectors import registry_of, snapshot_of, value
from tests.unit.test_metrics_exposition import parse

PASSWORD_HASH = hash_password("s3cret", iterations=10_000)


@pytest.fixture
def serve():
    servers: list[MetricsServer] = []

    def start(scrape=None, **settings) -> tuple[str, int]:
        snap = snapshot_of()
        registry = registry_of(lambda: (snap, True))
        server = MetricsServer(MetricsSettings(listen=("127.0.0.1", 0), **settings),
                               scrape or registry.scrape)
        server.start()
        servers.append(server)
        return server.address

    yield start
    for server in servers:
        server.close()


def request(address, method="GET", path="/metrics", headers=None, context=None):
    host, port = address
    if context is None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
    else:
        conn = http.client.HTTPSConnection(host, port, timeout=10, context=context)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_paths_and_methods(serve):
    address = serve()
    status, headers, body = request(address)
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert value(parse(body), "nodenetd_interface_mtu_bytes", device="lab0") == 4000
    status, _, body = request(address, path="/")
    assert status == 200 and b'<a href="/metrics">' in body
    assert request(address, path="/nope")[0] == 404
    status, headers, _ = request(address, method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, headers, body = request(address, method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 1000


def test_gzip_when_the_client_accepts_it(serve):
    address = serve()
    plain = request(address)[2]
    status, headers, body = request(address, headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert len(body) < len(plain) / 3
    unzipped = parse(gzip.decompress(body))
    assert unzipped.keys() == parse(plain).keys()
    _, headers, _ = request(address, headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "Content-Encoding" not in headers


def test_keep_alive_serves_several_scrapes_on_one_connection(serve):
    host, port = serve()
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            assert response.status == 200 and response.read()
    finally:
        conn.close()


def test_basic_auth(serve):
    address = serve(basic_auth={"prometheus": PASSWORD_HASH})
    status, headers, _ = request(address)
    assert status == 401 and headers["WWW-Authenticate"].startswith('Basic realm="nodenetd"')
    assert request(address, headers=basic("prometheus", "wrong"))[0] == 401
    assert request(address, headers=basic("someone", "s3cret"))[0] == 401
    assert request(address, headers={"Authorization": "Basic !!!"})[0] == 401
    assert request(address, headers={"Authorization": "Bearer x"})[0] == 401
    assert request(address, path="/", headers=basic("prometheus", "s3cret"))[0] == 200
    status, _, body = request(address, headers=basic("prometheus", "s3cret"))
    assert status == 200 and b"nodenetd_build_info" in body


@pytest.fixture
def certificate(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is missing")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True,
                   timeout=60)
    return cert, key


def test_tls_with_basic_auth(serve, certificate):
    cert, key = certificate
    address = serve(tls=TlsSettings(str(cert), str(key)),
                    basic_auth={"prometheus": PASSWORD_HASH})
    context = ssl.create_default_context(cafile=str(cert))
    status, _, body = request(address, headers=basic("prometheus", "s3cret"), context=context)
    assert status == 200 and b"nodenetd_build_info" in body
    assert request(address, context=context)[0] == 401
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        request(address)  # plain HTTP to a TLS port
    # a client that does not trust the certificate fails its handshake; the server goes on
    with pytest.raises(ssl.SSLError):
        request(address, context=ssl.create_default_context())
    assert request(address, headers=basic("prometheus", "s3cret"), context=context)[0] == 200


def test_mutual_tls_requires_a_client_certificate(serve, certificate, tmp_path):
    cert, key = certificate
    address = serve(tls=TlsSettings(str(cert), str(key), client_ca=str(cert)))
    context = ssl.create_default_context(cafile=str(cert))
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        request(address, context=context)
    context.load_cert_chain(str(cert), str(key))  # self-signed: its own CA
    assert request(address, context=context)[0] == 200


def test_concurrent_scrapes_are_safe(serve):
    address = serve()
    bodies: list[bytes] = []
    errors: list[BaseException] = []

    def worker():
        try:
            for _ in range(10):
                status, _, body = request(address)
                assert status == 200
                bodies.append(body)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and len(bodies) == 80
    keys = {frozenset(k for k in parse(body) if "duration" not in k[0]
                      and k[0] != "process_cpu_seconds_total") for body in bodies}
    assert len(keys) == 1  # every scrape complete and alike


# -- the hand-over from the event loop ------------------------------------------------------------


@pytest.fixture
def loop_thread():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


def test_snapshots_are_built_on_the_loop_and_shared_by_concurrent_scrapes(loop_thread):
    built_on: list[threading.Thread] = []

    def build():
        built_on.append(threading.current_thread())
        time.sleep(0.05)
        return snapshot_of()

    publisher = Publisher(loop_thread, build)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(publisher.fetch()))
               for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert all(fresh for _, fresh in results) and len(results) == 5
    assert len({id(snap) for snap, _ in results}) <= 2  # waiters share a build
    assert all(t is not threading.current_thread() and t.name != "MainThread"
               for t in built_on)


def test_a_busy_loop_gets_a_stale_snapshot_served_not_a_hung_scrape(loop_thread):
    publisher = Publisher(loop_thread, snapshot_of, timeout=0.2)
    first, fresh = publisher.fetch()
    assert first is not None and fresh
    registry = Registry([TuningCollector()], publisher.fetch)
    blocked = threading.Event()
    loop_thread.call_soon_threadsafe(lambda: (blocked.set(), time.sleep(1.0)))
    assert blocked.wait(5)
    started = time.monotonic()
    s = parse(registry.scrape())
    assert time.monotonic() - started < 0.9
    assert value(s, "nodenetd_collector_success", collector="snapshot") == 0
    assert value(s, "nodenetd_collector_success", collector="tuning") == 1
    assert value(s, "nodenetd_profile_applies_total", profile="base") == 2


def test_a_slow_scrape_never_blocks_the_event_loop(loop_thread):
    class Slow:
        name = "slow"

        def collect(self, snapshot):
            time.sleep(0.5)  # a slow kernel read, in the scrape's thread
            return [Family("nodenetd_slow", "gauge", "slow").add("", 1)]

    publisher = Publisher(loop_thread, snapshot_of)
    registry = Registry([Slow()], publisher.fetch)
    ticks: list[float] = []

    def tick():
        ticks.append(time.monotonic())
        if len(ticks) < 40:
            loop_thread.call_later(0.01, tick)

    loop_thread.call_soon_threadsafe(tick)
    body = registry.scrape()
    assert b"nodenetd_slow 1" in body
    time.sleep(0.1)
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) >= 30 and max(gaps) < 0.1, max(gaps)


def test_the_textfile_writer_replaces_the_file_and_removes_it(tmp_path):
    path = tmp_path / "nodenetd.prom"
    writes = iter([b"# one\n", b"# two\n"])
    writer = TextfileWriter(type("S", (), {"path": str(path), "interval": 3600})(),
                            lambda: next(writes))
    assert writer.write_once() and path.read_bytes() == b"# one\n"
    assert writer.write_once() and path.read_bytes() == b"# two\n"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir()] == ["nodenetd.prom"]  # no temp files left
    writer.close()
    assert not path.exists()


def test_an_unwritable_textfile_is_logged_once(tmp_path, caplog):
    writer = TextfileWriter(type("S", (), {"path": str(tmp_path / "no" / "x.prom"),
                                           "interval": 3600})(), lambda: b"x")
    assert not writer.write_once() and not writer.write_once()
    assert len([r for r in caplog.records if "cannot write the textfile" in r.message]) == 1


def test_connections_beyond_the_limit_are_closed_at_once(serve, monkeypatch):
    import socket

    from nodenetd.metrics import http as metrics_http

    monkeypatch.setattr(metrics_http, "MAX_CONNECTIONS", 2)
    address = serve()
    idle = [socket.create_connection(address, timeout=5) for _ in range(2)]
    try:
        time.sleep(0.2)  # both accepted, each holding a thread
        extra = socket.create_connection(address, timeout=5)
        assert extra.recv(1) == b""  # closed without a word
        extra.close()
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    assert request(address)[0] == 200  # freed


def test_a_reload_restarts_only_what_changed(tmp_path):
    from nodenetd.config.metrics import TextfileSettings
    from nodenetd.metrics.exporter import MetricsExporter

    exporter = MetricsExporter(MetricsSettings(listen=("127.0.0.1", 0)), snapshot_of, None)
    exporter.start()
    try:
        server = exporter.server
        assert server is not None and request(server.address)[0] == 200
        textfile = tmp_path / "nodenetd.prom"
        exporter.reload(MetricsSettings(listen=("127.0.0.1", 0),
                                        textfile=TextfileSettings(str(textfile), 3600)))
        assert exporter.server is server  # the same listener
        assert exporter.textfile is not None
        assert eventually_true(textfile.exists)
        exporter.reload(MetricsSettings(listen=None, include=("veth*",)))
        assert exporter.server is None and exporter.textfile is None
        assert not textfile.exists()
        assert all(c.selection._include is not None for c in exporter.registry.collectors
                   if hasattr(c, "selection"))
    finally:
        exporter.close()


def eventually_true(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
