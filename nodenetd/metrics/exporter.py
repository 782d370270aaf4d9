"""The daemon's metrics: the snapshot publisher, the collectors, the HTTP server and the
textfile writer, started, reloaded and stopped together by the service.

A part that cannot start (the port is taken, a certificate is unreadable) is logged and left
off; the daemon keeps tuning and failing over, which matter more than its metrics. A reload
restarts only what its new ``metrics:`` section changed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from nodenetd.config.metrics import MetricsSettings
from nodenetd.metrics.daemon import DaemonCollector, ProcessCollector
from nodenetd.metrics.failover import FailoverCollector, ProbesCollector
from nodenetd.metrics.http import MetricsServer
from nodenetd.metrics.interfaces import (
    InterfacesCollector,
    InterfaceSelection,
    InterfaceStatsCollector,
)
from nodenetd.metrics.registry import Registry
from nodenetd.metrics.snapshot import Publisher, Snapshot
from nodenetd.metrics.textfile import TextfileWriter
from nodenetd.metrics.tuning import TuningCollector

__all__ = ["MetricsExporter", "make_registry"]

log = logging.getLogger("nodenetd.metrics")


def make_registry(settings: MetricsSettings,
                  snapshot: Callable[[], tuple[Snapshot | None, bool]]) -> Registry:
    selection = InterfaceSelection(settings)
    return Registry(
        [DaemonCollector(), InterfacesCollector(selection), InterfaceStatsCollector(selection),
         TuningCollector(), FailoverCollector(), ProbesCollector()],
        snapshot, process=ProcessCollector())


class MetricsExporter:
    def __init__(self, settings: MetricsSettings | None, build: Callable[[], Snapshot],
                 loop: asyncio.AbstractEventLoop | None) -> None:
        self.settings = settings or MetricsSettings()
        self.publisher = Publisher(loop, build)
        self.registry = make_registry(self.settings, self.publisher.fetch)
        self.server: MetricsServer | None = None
        self.textfile: TextfileWriter | None = None

    def start(self) -> None:
        """Serve and write (snapshots are built when the first scrape asks)."""
        self._start_server()
        self._start_textfile()

    def scrape(self, *, process: bool = True) -> bytes:
        return self.registry.scrape(process=process)

    def _start_server(self) -> None:
        if self.settings.listen is None:
            return
        server = MetricsServer(self.settings, self.scrape)
        try:
            server.start()
        except (OSError, ssl.SSLError) as exc:
            host, port = self.settings.listen
            log.error("metrics: cannot serve on %s:%d: %s; running without /metrics",
                      host or "*", port, exc)
            return
        self.server = server
        host, port = server.address
        log.info("metrics: serving http%s://%s/metrics", "s" if self.settings.tls else "",
                 f"[{host}]:{port}" if ":" in host else f"{host}:{port}")

    def _start_textfile(self) -> None:
        if self.settings.textfile is None:
            return
        self.textfile = TextfileWriter(self.settings.textfile,
                                       lambda: self.scrape(process=False))
        self.textfile.start()

    def reload(self, settings: MetricsSettings | None) -> None:
        """A new ``metrics:`` section (on the loop)."""
        new = settings or MetricsSettings()
        old, self.settings = self.settings, new
        if (new.include, new.exclude) != (old.include, old.exclude):
            selection = InterfaceSelection(new)
            for collector in self.registry.collectors:
                if hasattr(collector, "selection"):
                    collector.selection = selection
        changed = (new.listen, new.tls, dict(new.basic_auth)) != (
            old.listen, old.tls, dict(old.basic_auth))
        if changed or (self.server is None and new.listen is not None):  # or: retry a bind
            if self.server is not None:
                self.server.close()
                self.server = None
            self._start_server()
        if new.textfile != old.textfile:
            if self.textfile is not None:
                self.textfile.close()
                self.textfile = None
            self._start_textfile()

    def close(self) -> None:
        self.publisher.close()
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.textfile is not None:
            self.textfile.close()
            self.textfile = None
        self.registry.close()
