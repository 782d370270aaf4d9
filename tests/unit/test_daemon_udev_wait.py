"""A new NIC waits for udev when a selector matches on udev properties (ID_PATH...), and is
tuned on udev's event, or after UDEV_WAIT seconds without it. Only udev is stood in for:
no udevd serves a test namespace."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from nodenetd.config.model import InterfaceRule, Selector
from nodenetd.daemon import service as service_mod
from nodenetd.daemon.service import Service
from tests.unit.test_plan_physical_nics import nic


class FakeUdev:
    available = True

    def __init__(self):
        self.done: set[int] = set()

    def initialized(self, ifindex: int) -> bool:
        return ifindex in self.done


def make_service(rules, links):
    service = Service(None)
    service.udev = FakeUdev()
    service.loaded = SimpleNamespace(resolved=SimpleNamespace(rules=rules))
    service.events = SimpleNamespace(view=SimpleNamespace(
        links={link.name: link for link in links}, by_index={link.index: link for link in links}))
    service.marked = []
    service._mark_dirty = service.marked.append
    return service


UDEV_RULE = InterfaceRule("by-path", Selector(udev=(("ID_PATH", "pci-0000:3b:*"),)))
NAME_RULE = InterfaceRule("by-name", Selector(names=("eth*",)))


def test_new_nic_waits_for_udevs_event_when_a_selector_needs_udev():
    async def scenario():
        service = make_service([UDEV_RULE], [nic(2, "eth0")])
        assert service._waiting_for_udev({"eth0"}) == {"eth0"}
        assert service._waiting_for_udev({"eth0"}) == {"eth0"}  # one timer, still waiting
        service.udev.done.add(2)
        service._on_udev_event("add", "eth0", 2, {})
        assert service.marked == ["eth0"]
        assert service._waiting_for_udev({"eth0"}) == set()
        assert service._udev_timers == {}

    asyncio.run(scenario())


def test_without_udev_selectors_nothing_waits():
    async def scenario():
        service = make_service([NAME_RULE], [nic(2, "eth0")])
        assert service._waiting_for_udev({"eth0"}) == set()

    asyncio.run(scenario())


def test_a_nic_udev_never_reports_is_tuned_after_the_wait(monkeypatch):
    monkeypatch.setattr(service_mod, "UDEV_WAIT", 0.05)

    async def scenario():
        service = make_service([UDEV_RULE], [nic(3, "eth1")])
        assert service._waiting_for_udev({"eth1"}) == {"eth1"}
        await asyncio.sleep(0.2)
        assert service.marked == ["eth1"]
        assert service._waiting_for_udev({"eth1"}) == set()  # given up: tune without udev

    asyncio.run(scenario())
