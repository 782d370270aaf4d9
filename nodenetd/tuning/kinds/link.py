"""Link attributes over rtnetlink: mtu, txqueuelen and admin state, set in one message."""

from __future__ import annotations

from typing import Any

from nodenetd.config.model import Wanted
from nodenetd.errors import Gone, KernelError, Unsupported
from nodenetd.kernel.links import Link
from nodenetd.tuning.kind import Batch, SettingKind
from nodenetd.tuning.plan import Target
from nodenetd.tuning.session import KernelSession

_ATTR = {"mtu": "mtu", "txqueuelen": "txqlen", "state": "state"}


def link_of(session: KernelSession, target: Target) -> Link:
    link = session.links().get(target.device or "")
    if link is None:
        raise Gone(str(target), "link", "interface no longer exists")
    return link


class LinkKind(SettingKind):
    name = "link"

    def current(self, session: KernelSession, target: Target, key: str) -> Any:
        link = link_of(session, target)
        if key == "mtu":
            return link.mtu
        if key == "txqueuelen":
            return link.txqueuelen
        return "up" if link.admin_up else "down"

    def resolve(self, session: KernelSession, target: Target, key: str, wanted: Wanted,
                current: Any) -> Any:
        link = link_of(session, target)
        if key == "mtu" and link.max_mtu and not link.min_mtu <= wanted.value <= link.max_mtu:
            raise Unsupported(
                str(target), "link.mtu",
                f"{wanted.value} is outside the device's range {link.min_mtu}..{link.max_mtu}",
            )
        return wanted.value

    def apply(self, session: KernelSession, batch: Batch) -> list[KernelError | None]:
        items = []
        for target, values in batch:
            items.append((link_of(session, target),
                          {_ATTR[key]: value for key, value in values.items()}))
        return session.links_api.set_many(items)

    def refresh(self, session: KernelSession) -> None:
        session.invalidate("links")
