"""The kernel as one run sees it: sockets opened once, each kind's state dumped at most once
until a write invalidates it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nodenetd.kernel.links import Link, Links


class KernelSession:
    """Owns the netlink sockets of one plan/apply run and caches per-kind dumps."""

    def __init__(self) -> None:
        self.links_api = Links()
        self._ethtool: Any = None
        self._cache: dict[str, Any] = {}

    def close(self) -> None:
        self.links_api.close()
        if self._ethtool is not None:
            self._ethtool.close()

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

    def cached(self, name: str, load: Callable[[], Any]) -> Any:
        """One dump per kind per run: ``load`` runs only if nothing is cached under name."""
        if name not in self._cache:
            self._cache[name] = load()
        return self._cache[name]

    def invalidate(self, name: str) -> None:
        self._cache.pop(name, None)

    def invalidate_all(self) -> None:
        self._cache.clear()

    def links(self) -> dict[str, Link]:
        return self.cached("links", self.links_api.dump)
