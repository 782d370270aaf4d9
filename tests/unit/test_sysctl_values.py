"""Sysctl desired values: exact, floors and ceilings, compared field by field."""

import pytest

from nodenetd.config.model import SysctlValue
from nodenetd.kernel.sysctl import SysctlKey
from nodenetd.tuning.kinds.sysctl import SysctlKind, resolve_value


@pytest.mark.parametrize(
    ("wanted", "current", "expected"),
    [
        (SysctlValue("=", (1,)), "0", "1"),
        (SysctlValue("=", ("bbr",)), "cubic", "bbr"),
        (SysctlValue(">=", (4096,)), "1024", "4096"),
        (SysctlValue(">=", (4096,)), "8192", "8192"),  # a floor never lowers
        (SysctlValue("<=", (600,)), "300", "300"),  # a ceiling never raises
        (SysctlValue("<=", (600,)), "900", "600"),
        # multi-field: each field is raised on its own
        (SysctlValue(">=", (4096, 131072, 16777216)), "4096 87380 33554432",
         "4096 131072 33554432"),
        (SysctlValue("=", (4096, 131072, 16777216)), "4096\t87380\t6291456",
         "4096 131072 16777216"),
    ],
)
def test_resolve_value(wanted, current, expected):
    assert resolve_value(wanted, current) == expected


def test_in_sync_compares_fields_not_whitespace():
    kind = SysctlKind()
    assert kind.in_sync("4096 131072 6291456", "4096\t131072  6291456")
    assert not kind.in_sync("4096 131072 6291456", "4096 131072 6291457")
    assert kind.in_sync("1", "01")  # the kernel prints 1 for a written 01


def test_interface_names_with_dots_stay_one_path_segment():
    key = SysctlKey.for_interface("net.ipv4.conf.IF.rp_filter", "eth0.100")
    assert key.path == "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
    assert key.display == "net.ipv4.conf.eth0/100.rp_filter"  # as sysctl(8) prints it
