"""Keys others own: who owns what, read from sysctl.d the way systemd-sysctl reads it, and
the mapping form that takes a key over explicitly."""

from __future__ import annotations

import pytest

from nodenetd.config.validate import SysctlValueError, parse_sysctl_value, split_managed
from nodenetd.tuning.ownership import Ownership, read_sysctl_d
from nodenetd.tuning.plan import Target

NODE = Target()


def test_kube_proxy_owns_conntrack_size_and_timeouts_always():
    owner = Ownership().owner_of("sysctl", NODE, "net.netfilter.nf_conntrack_max")
    assert owner is not None and owner.name == "kube-proxy"
    assert "maxPerCore 32768" in owner.reason
    assert Ownership().owner_of("sysctl", NODE,
                                "net.netfilter.nf_conntrack_tcp_timeout_established")
    assert Ownership().owner_of("sysctl", NODE, "net.core.somaxconn") is None


def test_the_cni_owns_rp_filter_on_its_interfaces_and_all_while_they_exist():
    ownership = Ownership(links=["eth0", "cali1234", "lxc_health"])
    cni = ownership.owner_of("sysctl", Target("cali1234", 7), "net.ipv4.conf.IF.rp_filter")
    assert cni is not None and cni.name == "cni"
    assert ownership.owner_of("sysctl", Target("eth0", 2), "net.ipv4.conf.IF.rp_filter") is None
    assert ownership.owner_of("sysctl", NODE, "net.ipv4.conf.all.rp_filter").name == "cni"
    assert Ownership(links=["eth0"]).owner_of("sysctl", NODE,
                                              "net.ipv4.conf.all.rp_filter") is None


def test_a_bandwidth_manager_owns_default_qdisc_and_root_qdiscs_only_when_cilium_runs():
    cilium = Ownership(links=["eth0", "cilium_host", "cilium_net"])
    assert cilium.owner_of("sysctl", NODE, "net.core.default_qdisc").name == \
        "cni-bandwidth-manager"
    assert cilium.owner_of("qdisc", Target("eth0", 2), "root").name == "cni-bandwidth-manager"
    assert cilium.owner_of("qdisc", Target("lxc1", 9), "root") is None
    assert Ownership(links=["eth0"]).owner_of("sysctl", NODE, "net.core.default_qdisc") is None


def test_sysctl_d_is_read_in_systemds_order_with_masking_and_globs(tmp_path):
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    etc.mkdir()
    lib.mkdir()
    (lib / "50-default.conf").write_text("net.ipv4.conf.*.rp_filter = 2\n")
    (lib / "60-masked.conf").write_text("net.ipv4.conf.eth0.accept_redirects = 1\n")
    (etc / "60-masked.conf").write_text("# the admin's copy masks the vendor's\n"
                                        "-net/ipv4/conf/eth1/forwarding=1\n")
    (tmp_path / "sysctl.conf").write_text("net.core.somaxconn = 1024\n")

    entries = read_sysctl_d([str(etc), str(lib)], str(tmp_path / "sysctl.conf"))

    assert [(e.pattern, e.value, e.line) for e in entries] == [
        ("net.ipv4.conf.*.rp_filter", "2", 1),
        ("net.ipv4.conf.eth1.forwarding", "1", 2),
        ("net.core.somaxconn", "1024", 1)]
    ownership = Ownership(sysctl_d=entries, hotplug_sysctls=True)
    owner = ownership.owner_of("sysctl", Target("eth0", 2), "net.ipv4.conf.IF.rp_filter")
    assert owner.name == "systemd-sysctl" and "50-default.conf:1" in owner.reason
    assert ownership.owner_of("sysctl", Target("eth0", 2),
                              "net.ipv4.conf.IF.accept_redirects") is None  # masked
    assert ownership.owner_of("sysctl", NODE, "net.core.somaxconn") is None  # boot-time only
    outside_udev = Ownership(sysctl_d=entries, hotplug_sysctls=False)
    assert outside_udev.owner_of("sysctl", Target("eth0", 2),
                                 "net.ipv4.conf.IF.rp_filter") is None


@pytest.mark.parametrize(("raw", "value", "observe", "override"), [
    ({"floor": 4096}, ">=4096", False, None),
    ({"ceiling": "600"}, "<=600", False, None),
    ({"enforce": 1048576, "override": "kube-proxy"}, 1048576, False, "kube-proxy"),
    ({"observe": "4096 131072 16777216"}, "4096 131072 16777216", True, None),
    (8192, 8192, False, None),
])
def test_the_mapping_form_names_a_mode_and_maybe_an_owner(raw, value, observe, override):
    assert split_managed(raw) == (value, observe, override)
    parse_sysctl_value(split_managed(raw)[0])


@pytest.mark.parametrize(("raw", "says"), [
    ({"flor": 1}, "did you mean 'floor'?"),
    ({"floor": 1, "ceiling": 2}, "exactly one mode (found floor, ceiling)"),
    ({"override": "kube-proxy"}, "exactly one mode (found none)"),
    ({"floor": ">=5"}, "floor takes the number alone"),
    ({"enforce": 1, "override": 3}, "override must name an owner"),
])
def test_bad_mapping_forms_say_what_is_expected(raw, says):
    with pytest.raises(SysctlValueError) as excinfo:
        split_managed(raw)
    error = excinfo.value
    assert says in f"{error.message} {error.hint}"
