"""Daemon series: build info, event sources, resyncs, reloads, the snapshot's age, and the
process (``process_*``, prometheus-client's process collector, HTTP only: node_exporter's
textfile collector would clash with its own ``process_*``)."""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

from nodenetd import __version__
from nodenetd.daemon.sources.ethtool_monitor import NOTIFICATIONS
from nodenetd.daemon.sources.rtnl import MESSAGE_NAMES
from nodenetd.metrics.exposition import Family, escape, labels
from nodenetd.metrics.snapshot import Snapshot

__all__ = ["DaemonCollector", "ProcessCollector", "revision"]

_RTNL_EVENTS = tuple(MESSAGE_NAMES.values())
_ETHTOOL_EVENTS = tuple(kind for kind, _ in NOTIFICATIONS.values())
_UDEV_ACTIONS = ("add", "remove", "move", "change")


@cache
def revision() -> str:
    """The source revision: what packaging wrote to nodenetd/REVISION, else a git checkout's
    commit (read from .git, no subprocess), else ""."""
    package = Path(__file__).resolve().parents[1]
    try:
        return (package / "REVISION").read_text().strip()
    except OSError:
        pass
    git = package.parent / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head[5:]
        if (git / ref).is_file():
            return (git / ref).read_text().strip()[:12]
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0][:12]
    except OSError:
        pass
    return ""


class DaemonCollector:
    name = "daemon"

    def collect(self, snapshot: Snapshot) -> list[Family]:
        daemon = snapshot.daemon
        build = Family("nodenetd_build_info", "gauge",
                       "The running nodenetd: version, source revision, Python. Always 1.")
        build.add(labels(version=__version__, revision=revision(),
                         python_version=platform.python_version()), 1)
        netlink = Family("nodenetd_netlink_events_total", "counter",
                         "Netlink notifications read, by family (rtnetlink, ethtool) and "
                         "message (newlink, dellink, newaddr, ..., features, rings, ...).")
        for event in dict.fromkeys([*_RTNL_EVENTS, *daemon.rtnl_events]):
            netlink.add(labels(family="rtnetlink", event=event),
                        daemon.rtnl_events.get(event, 0))
        for event in dict.fromkeys([*_ETHTOOL_EVENTS, *daemon.ethtool_events]):
            netlink.add(labels(family="ethtool", event=event),
                        daemon.ethtool_events.get(event, 0))
        udev = Family("nodenetd_udev_events_total", "counter",
                      "udev network-device events read, by action.")
        for action in dict.fromkeys([*_UDEV_ACTIONS, *daemon.udev_events]):
            udev.add(labels(action=action), daemon.udev_events.get(action, 0))
        resyncs = Family("nodenetd_netlink_resyncs_total", "counter",
                         "Full link dumps merged into the view after start: after a lost "
                         "notification (overflow) and on the daemon.resync_interval timer.")
        resyncs.add("", daemon.resyncs)
        overflows = Family("nodenetd_netlink_overflows_total", "counter",
                           "Times an event socket's receive buffer overflowed (ENOBUFS) and "
                           "notifications were lost.")
        overflows.add("", daemon.overflows)
        record = snapshot.tuning
        reload_ok = Family("nodenetd_config_last_reload_successful", "gauge",
                           "1 when the last configuration load (start or reload) succeeded, "
                           "0 when a reload was rejected (the previous config stays).")
        reload_at = Family("nodenetd_config_last_reload_success_timestamp_seconds", "gauge",
                           "When the configuration was last loaded successfully.")
        if record is not None:
            reload_ok.add("", record.reload_ok)
            if record.last_reload_success_at is not None:
                reload_at.add("", record.last_reload_success_at)
        reloads = Family("nodenetd_config_reloads_total", "counter",
                         "Reloads that took effect (SIGHUP, systemctl reload, nodenetctl "
                         "reload).")
        reloads.add("", daemon.reloads)
        rejected = Family("nodenetd_config_reload_failures_total", "counter",
                          "Reloads rejected because the new configuration was invalid.")
        rejected.add("", daemon.reload_failures)
        taken = Family("nodenetd_snapshot_timestamp_seconds", "gauge",
                       "When the event loop took the state this scrape reports (older than "
                       "the scrape when the loop was too busy to take a new one in time).")
        taken.add("", snapshot.taken_at)
        return [build, netlink, udev, resyncs, overflows, reload_ok, reload_at, reloads,
                rejected, taken]


class ProcessCollector:
    """``process_*`` (CPU, memory, file descriptors, start time) via prometheus-client."""

    name = "process"

    def __init__(self) -> None:
        from prometheus_client import ProcessCollector as _Process

        self._process = _Process(registry=None)

    def collect(self, snapshot: Snapshot | None) -> list[Family]:
        families = []
        for metric in self._process.collect():
            name = metric.name + ("_total" if metric.type == "counter" else "")
            family = Family(name, metric.type, metric.documentation)
            for sample in metric.samples:
                label_text = "{" + ",".join(f'{k}="{escape(v)}"' for k, v in
                                            sample.labels.items()) + "}" if sample.labels else ""
                family.lines.append(f"{sample.name}{label_text} {_value(sample.value)}\n")
            families.append(family)
        return families


def _value(value: float) -> str:
    from nodenetd.metrics.exposition import fmt

    return fmt(float(value))
