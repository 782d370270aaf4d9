"""The kernel as one run sees it: sockets opened once, each kind's state read at most once
until a write invalidates it.

A run is about the whole node, or (the daemon's hotplug and drift path) about a few
interfaces: then ``scope`` names their ifindexes and each kind is read per device instead
of dumped for every interface, so tuning one new veth costs the same on a node with ten
interfaces or ten thousand."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from nodenetd.errors import KernelError
from nodenetd.kernel.links import Link, Links

# Above this many devices one dump is cheaper than per-device requests.
SMALL_SCOPE = 16


class KernelSession:
    """Owns the netlink sockets of a run (or of the daemon's life) and caches reads."""

    def __init__(self) -> None:
        self.links_api = Links()
        self._ethtool: Any = None
        self._bonds: Any = None
        self._steering: Any = None
        self._tc: Any = None
        self._cache: dict[str, Any] = {}
        self.scope: frozenset[int] | None = None

    def close(self) -> None:
        self.links_api.close()
        for adapter in (self._ethtool, self._bonds, self._tc):
            if adapter is not None:
                adapter.close()

    def __enter__(self) -> KernelSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def ethtool(self):
        """The ethtool-netlink socket, opened on first use (sysctl-only runs never need it)."""
        if self._ethtool is None:
            from nodenetd.kernel.ethtool import EthtoolNetlink

            self._ethtool = EthtoolNetlink()
        return self._ethtool

    @property
    def bonds(self):
        """The bond adapter, opened on first use (only failover bond groups need it)."""
        if self._bonds is None:
            from nodenetd.kernel.bond import BondAdapter

            self._bonds = BondAdapter()
        return self._bonds

    @property
    def steering(self):
        """Queue steering and IRQ affinity through sysfs and procfs (files, no socket)."""
        if self._steering is None:
            from nodenetd.kernel.steering import SteeringFs

            self._steering = SteeringFs()
        return self._steering

    @property
    def tc(self):
        """The tc (qdisc) socket, opened on first use (only qdisc settings need it)."""
        if self._tc is None:
            from nodenetd.kernel.tc import Tc

            self._tc = Tc()
        return self._tc

    def narrow(self, ifindexes: Iterable[int] | None) -> None:
        """Start a new run about these interfaces only (None: the whole node)."""
        self.scope = None if ifindexes is None else frozenset(ifindexes)
        self._cache.clear()

    @property
    def _small(self) -> bool:
        return self.scope is not None and len(self.scope) <= SMALL_SCOPE

    def cached(self, name: str, load: Callable[[], Any]) -> Any:
        """One read per kind per run: ``load`` runs only if nothing is cached under name."""
        if name not in self._cache:
            self._cache[name] = load()
        return self._cache[name]

    def invalidate(self, name: str) -> None:
        self._cache.pop(name, None)

    def invalidate_all(self) -> None:
        self._cache.clear()

    def links(self) -> dict[str, Link]:
        def load() -> dict[str, Link]:
            if not self._small:
                return self.links_api.dump()
            found = (self.links_api.get(index) for index in self.scope or ())
            return {link.name: link for link in found if link is not None}

        return self.cached("links", load)

    def ethtool_state(self, kind: str) -> dict[int, Any]:
        """features/channels/rings/coalesce by ifindex: one dump, or per-device gets for a
        small scope. Devices without the kind are absent."""

        def load() -> dict[int, Any]:
            if not self._small:
                return getattr(self.ethtool, f"dump_{kind}")()
            get = getattr(self.ethtool, f"get_{kind}")
            states = {}
            for ifindex in self.scope or ():
                try:
                    state = get(ifindex)
                except KernelError:  # gone or unsupported: absent, as in a dump
                    continue
                if state is not None:
                    states[ifindex] = state
            return states

        return self.cached(kind, load)
