"""Prometheus metrics: what only nodenetd knows (tuning, drift, failover, probes), next to
node_exporter's series and joinable with them on ``device``.

    snapshot.py   the immutable snapshot the event loop hands to scrapes (Publisher)
    state.py      what the service records for the metrics (ServiceRecord)
    interfaces.py daemon.py tuning.py failover.py   one collector per data source
    registry.py   one scrape: every collector, each failing alone
    exposition.py the text format, written directly (fast for 1000 interfaces)
    http.py       /metrics over HTTP(S) with basic auth;  textfile.py  node_exporter textfile
    exporter.py   all of it, started/reloaded/stopped by the service
    auth.py       password hashes;  ``python3 -m nodenetd.metrics hash-password``
    grafana/      the dashboard;  prometheus/  alert rules and their promtool tests

This package is imported lazily by the config (hash checks): keep this file free of imports.
"""
