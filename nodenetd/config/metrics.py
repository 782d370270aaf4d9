"""The node config's ``metrics:`` section: where /metrics is served, how it is protected,
the optional textfile for node_exporter, and which interfaces get per-interface series.

The schema (``node.schema.json``, ``metrics``) checks shapes. Checked here, each problem one
ConfigIssue at its line: the listen address parses; a listen address beyond loopback has
TLS *and* basic auth unless ``allow_insecure: true`` says the network is trusted; every
password is a hash nodenetd can verify.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from nodenetd.config.yamlload import YDict, format_path, locate
from nodenetd.errors import ConfigIssue

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_PORT",
    "MetricsSettings",
    "TextfileSettings",
    "TlsSettings",
    "build_metrics",
    "check_metrics",
    "is_loopback",
    "parse_listen",
]

# Outside 9100-9999, which is fully allocated on Prometheus' default-port wiki page, and
# clear of the 102xx ports kubelet and kube-proxy use on the nodes nodenetd runs on.
DEFAULT_PORT = 10037
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_TEXTFILE_INTERVAL = 15.0


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6]:PORT``; an empty host means every address) as (host, port);
    raises ValueError."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"{text!r} is not HOST:PORT")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    elif host and host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address (or localhost)") from None
        if ":" in host:
            raise ValueError(f"write an IPv6 address in brackets: [{host}]:{port}")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    if not host:
        return False
    return ipaddress.ip_address(host).is_loopback


@dataclass(frozen=True)
class TlsSettings:
    cert: str
    key: str
    client_ca: str | None = None  # set: clients must present a certificate it signed


@dataclass(frozen=True)
class TextfileSettings:
    path: str
    interval: float = DEFAULT_TEXTFILE_INTERVAL


@dataclass(frozen=True)
class MetricsSettings:
    """``metrics:`` of the node config; the defaults serve loopback only."""

    listen: tuple[str, int] | None = ("127.0.0.1", DEFAULT_PORT)  # None: no HTTP
    tls: TlsSettings | None = None
    basic_auth: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    allow_insecure: bool = False
    textfile: TextfileSettings | None = None
    include: tuple[str, ...] = ()  # interface globs exported besides managed and physical
    exclude: tuple[str, ...] = ()  # interface globs never exported (wins over the rest)


def build_metrics(doc: Mapping) -> MetricsSettings:
    """The typed section of a node config that :func:`check_metrics` found valid."""
    section = doc.get("metrics") or {}
    listen = section.get("listen", DEFAULT_LISTEN)
    tls = section.get("tls")
    textfile = section.get("textfile")
    interfaces = section.get("interfaces") or {}
    return MetricsSettings(
        listen=None if listen is False else parse_listen(listen),
        tls=None if not tls else TlsSettings(tls["cert"], tls["key"], tls.get("client_ca")),
        basic_auth=MappingProxyType(dict(section.get("basic_auth") or {})),
        allow_insecure=bool(section.get("allow_insecure", False)),
        textfile=None if not textfile else TextfileSettings(
            textfile["path"], float(textfile.get("interval", DEFAULT_TEXTFILE_INTERVAL))),
        include=tuple(interfaces.get("include") or ()),
        exclude=tuple(interfaces.get("exclude") or ()),
    )


def check_metrics(doc: YDict) -> list[ConfigIssue]:
    """Semantic issues of a node config's ``metrics`` section (after the schema passed)."""
    from nodenetd.metrics.auth import hash_problem

    section = doc.get("metrics")
    if not isinstance(section, YDict):
        return []
    issues: list[ConfigIssue] = []

    def issue(path: tuple, message: str, expected: str | None = None) -> None:
        issues.append(ConfigIssue(locate(doc, path), format_path(path), message, expected))

    listen = section.get("listen", DEFAULT_LISTEN)
    host = None
    if isinstance(listen, str):
        try:
            host, _ = parse_listen(listen)
        except ValueError as exc:
            issue(("metrics", "listen"), str(exc), "HOST:PORT, e.g. 127.0.0.1:10037 or "
                  "[::1]:10037, or false for no HTTP")
    if host is not None and not is_loopback(host) and not section.get("allow_insecure"):
        missing = [key for key in ("tls", "basic_auth") if not section.get(key)]
        if missing:
            issue(("metrics", "listen"),
                  f"serving metrics beyond loopback ({listen}) needs {' and '.join(missing)}",
                  "tls: {cert, key} and basic_auth: {USER: HASH}, or allow_insecure: true "
                  "on a trusted network")
    auth = section.get("basic_auth")
    if isinstance(auth, YDict):
        for user, stored in auth.items():
            problem = hash_problem(stored)
            if problem:
                issue(("metrics", "basic_auth", user), problem)
    return issues
